// Vigil status page. Every value is put in the page with textContent or
// SVG text nodes, never as HTML: device attributes come from devices.
(function () {
  'use strict';
  var q = new URLSearchParams(location.search);
  if (q.get('token')) { localStorage.setItem('vigil.token', q.get('token')); history.replaceState(null, '', location.pathname); }
  var token = localStorage.getItem('vigil.token') || '';
  var $ = function (id) { return document.getElementById(id); };
  var SVGNS = 'http://www.w3.org/2000/svg';

  function api(method, path, body) {
    var opts = { method: method, headers: { 'Authorization': 'Bearer ' + token } };
    if (body !== undefined) { opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      if (r.status === 401) { $('login').hidden = false; throw new Error('not logged in'); }
      if (r.status === 204) { return null; }
      return r.json().then(function (d) { if (!r.ok) { throw new Error(d.error || ('HTTP ' + r.status)); } return d; });
    });
  }
  function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined && text !== null) { e.textContent = String(text); } if (cls) { e.className = cls; } return e; }
  function clear(e) { while (e.firstChild) { e.removeChild(e.firstChild); } }
  function svg(tag, attrs) { var e = document.createElementNS(SVGNS, tag); for (var k in attrs) { e.setAttribute(k, attrs[k]); } return e; }
  function fmt(v) { return typeof v === 'number' ? (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v * 100) / 100) : v.toPrecision(4)) : (v === null ? '' : String(v)); }

  // ---- charts (SVG, no library) ----
  function num(v) { if (typeof v === 'number') { return v; } var t = Date.parse(v); if (!isNaN(t) && /\d{4}-\d\d-\d\d/.test(v)) { return t; } var n = parseFloat(v); return isNaN(n) ? null : n; }
  function isTime(v) { return typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v); }
  function label(v, time) { if (time) { return new Date(v).toISOString().slice(11, 19); } return fmt(v); }
  var W = 640, H = 260, P = 40;
  function frame() { var s = svg('svg', { width: '100%', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'xMinYMin meet', 'class': 'chart', style: 'max-width:' + W + 'px' }); s.appendChild(svg('rect', { x: 0, y: 0, width: W, height: H, fill: '#fff' })); return s; }
  function axes(s, xmin, xmax, ymin, ymax, xtime) {
    s.appendChild(svg('line', { x1: P, y1: H - P, x2: W - 10, y2: H - P, stroke: '#889' }));
    s.appendChild(svg('line', { x1: P, y1: 10, x2: P, y2: H - P, stroke: '#889' }));
    var t1 = svg('text', { x: 2, y: 14 }); t1.textContent = fmt(ymax); s.appendChild(t1);
    var t2 = svg('text', { x: 2, y: H - P }); t2.textContent = fmt(ymin); s.appendChild(t2);
    if (xmin !== null) {
      var t3 = svg('text', { x: P, y: H - P + 14 }); t3.textContent = label(xmin, xtime); s.appendChild(t3);
      var t4 = svg('text', { x: W - 90, y: H - P + 14 }); t4.textContent = label(xmax, xtime); s.appendChild(t4);
    }
  }
  var palette = ['#2f7ed8', '#e4572e', '#17a398', '#f3a712', '#8e44ad', '#5b6770', '#29335c', '#a8c686'];
  function scale(v, a, b, lo, hi) { return b === a ? (lo + hi) / 2 : lo + (v - a) * (hi - lo) / (b - a); }
  function chart(container, type, columns, rows, marks) {
    clear(container);
    if (type === 'table' || !rows.length) { return; }
    var s = frame(), i, j;
    if (type === 'bar' || type === 'pie') {
      var labels = rows.map(function (r) { return fmt(r[0]); }), vals = rows.map(function (r) { return num(r[1]) || 0; });
      if (type === 'bar') {
        var max = Math.max.apply(null, vals.concat([0])), bw = (W - P - 10) / vals.length;
        axes(s, null, null, 0, max);
        for (i = 0; i < vals.length; i++) {
          var h = scale(vals[i], 0, max || 1, 0, H - P - 10);
          var r = svg('rect', { x: P + i * bw + 1, y: H - P - h, width: Math.max(bw - 2, 1), height: h, fill: palette[0] });
          var tt = svg('title', {}); tt.textContent = labels[i] + ': ' + fmt(vals[i]); r.appendChild(tt); s.appendChild(r);
          if (vals.length <= 24) { var lt = svg('text', { x: P + i * bw + 2, y: H - P + 14 }); lt.textContent = labels[i].slice(0, 10); s.appendChild(lt); }
        }
      } else {
        var total = vals.reduce(function (a, b) { return a + Math.abs(b); }, 0) || 1, ang = 0, cx = H / 2, cy = H / 2, rad = H / 2 - 10;
        for (i = 0; i < vals.length; i++) {
          var a2 = ang + 2 * Math.PI * Math.abs(vals[i]) / total;
          var large = a2 - ang > Math.PI ? 1 : 0;
          var d = vals.length === 1 ? 'M' + (cx - rad) + ',' + cy + 'a' + rad + ',' + rad + ' 0 1,0 ' + (2 * rad) + ',0a' + rad + ',' + rad + ' 0 1,0 ' + (-2 * rad) + ',0'
            : 'M' + cx + ',' + cy + 'L' + (cx + rad * Math.cos(ang)) + ',' + (cy + rad * Math.sin(ang)) + 'A' + rad + ',' + rad + ' 0 ' + large + ',1 ' + (cx + rad * Math.cos(a2)) + ',' + (cy + rad * Math.sin(a2)) + 'Z';
          var p = svg('path', { d: d, fill: palette[i % palette.length] });
          var pt = svg('title', {}); pt.textContent = labels[i] + ': ' + fmt(vals[i]); p.appendChild(pt); s.appendChild(p);
          var lg = svg('text', { x: H + 10, y: 16 + 14 * i, fill: palette[i % palette.length] }); lg.textContent = labels[i] + ' (' + fmt(vals[i]) + ')'; if (i < 16) { s.appendChild(lg); }
          ang = a2;
        }
      }
    } else if (type === 'histogram') {
      var xs = rows.map(function (r) { return num(r[0]); }).filter(function (v) { return v !== null; });
      if (!xs.length) { return; }
      var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs), nb = 20, bins = new Array(nb).fill(0);
      xs.forEach(function (v) { var k = hi === lo ? 0 : Math.min(nb - 1, Math.floor((v - lo) / (hi - lo) * nb)); bins[k]++; });
      var bmax = Math.max.apply(null, bins), w = (W - P - 10) / nb;
      axes(s, lo, hi, 0, bmax);
      for (i = 0; i < nb; i++) { var hh = scale(bins[i], 0, bmax || 1, 0, H - P - 10); s.appendChild(svg('rect', { x: P + i * w + 1, y: H - P - hh, width: w - 2, height: hh, fill: palette[2] })); }
    } else { // line, scatter
      var xt = isTime(rows[0][0]);
      var X = rows.map(function (r) { return num(r[0]); });
      var series = [];
      for (j = 1; j < columns.length; j++) {
        var ys = rows.map(function (r) { return num(r[j]); });
        if (ys.some(function (v) { return v !== null; })) { series.push({ name: columns[j], ys: ys }); }
      }
      if (!series.length) { return; }
      var all = [].concat.apply([], series.map(function (x) { return x.ys; })).filter(function (v) { return v !== null; });
      var x0 = Math.min.apply(null, X), x1 = Math.max.apply(null, X), y0 = Math.min.apply(null, all), y1 = Math.max.apply(null, all);
      axes(s, x0, x1, y0, y1, xt);
      series.forEach(function (sr, k) {
        var pts = [];
        for (i = 0; i < X.length; i++) {
          if (sr.ys[i] === null || X[i] === null) { continue; }
          var px = scale(X[i], x0, x1, P, W - 10), py = scale(sr.ys[i], y0, y1, H - P, 10);
          if (type === 'scatter') { s.appendChild(svg('circle', { cx: px, cy: py, r: 2.5, fill: palette[k % palette.length] })); } else { pts.push(px + ',' + py); }
        }
        if (type === 'line') { s.appendChild(svg('polyline', { points: pts.join(' '), fill: 'none', stroke: palette[k % palette.length], 'stroke-width': 1.5 })); }
        var lg2 = svg('text', { x: W - 160, y: 14 + 13 * k, fill: palette[k % palette.length] }); lg2.textContent = sr.name; s.appendChild(lg2);
      });
      (marks || []).forEach(function (m) {
        var mx = scale(m, x0, x1, P, W - 10);
        s.appendChild(svg('line', { x1: mx, y1: 10, x2: mx, y2: H - P, stroke: '#b00020', 'stroke-dasharray': '4,3', 'class': 'alert-mark' }));
      });
    }
    container.appendChild(s);
  }
  function table(container, res) {
    clear(container);
    var t = el('table'), th = el('thead'), tr = el('tr');
    res.columns.forEach(function (c) { tr.appendChild(el('th', c)); });
    th.appendChild(tr); t.appendChild(th);
    var tb = el('tbody');
    res.rows.forEach(function (r) { var row = el('tr'); r.forEach(function (v) { row.appendChild(el('td', fmt(v))); }); tb.appendChild(row); });
    t.appendChild(tb); container.appendChild(t);
  }

  // ---- alerts ----
  function loadAlerts() {
    var p = new URLSearchParams({ limit: '1000' });
    if ($('f-device').value) { p.set('device', $('f-device').value); }
    if ($('f-site').value) { p.set('site', $('f-site').value); }
    if ($('f-severity').value) { p.set('severity', $('f-severity').value); }
    return api('GET', '/api/v1/alerts?' + p).then(function (d) {
      var tb = $('alert-rows'); clear(tb);
      d.alerts.forEach(function (a) {
        var tr = el('tr'); tr.className = 'alert';
        tr.appendChild(el('td', a.detected_at.replace('T', ' ').slice(0, 23)));
        var td = el('td'); var link = el('a', a.device_id, 'dev'); link.addEventListener('click', function () { showDevice(a.device_id, a.ts); }); td.appendChild(link); tr.appendChild(td);
        tr.appendChild(el('td', a.site || ''));
        tr.appendChild(el('td', a.ts.replace('T', ' ').slice(0, 23)));
        tr.appendChild(el('td', a.score.toFixed(3)));
        tr.appendChild(el('td', a.severity, a.severity));
        tr.appendChild(el('td', a.state));
        tr.appendChild(el('td', a.readings));
        tr.appendChild(el('td', (a.reasons || []).map(function (x) { return x.feature + ' ' + fmt(x.value); }).join(', ')));
        var v = el('td');
        if (a.feedback) { v.textContent = a.feedback.label === 'anomaly' ? 'true alert' : 'false alert'; } else {
          ['anomaly', 'normal'].forEach(function (lbl) {
            var b = el('button', lbl === 'anomaly' ? 'true' : 'false');
            b.title = lbl === 'anomaly' ? 'a real anomaly' : 'a false alert';
            b.addEventListener('click', function () { api('POST', '/api/v1/alerts/' + encodeURIComponent(a.alert_id) + '/feedback', { label: lbl, note: '' }).then(loadAlerts); });
            v.appendChild(b);
          });
        }
        tr.appendChild(v);
        tb.appendChild(tr);
      });
      $('alert-count').textContent = d.alerts.length + ' alerts';
    });
  }
  function showDevice(id, alertTs) {
    $('device-panel').hidden = false;
    $('device-title').textContent = 'Recent readings of ' + id;
    api('GET', '/api/v1/devices/' + encodeURIComponent(id) + '/readings?limit=300').then(function (d) {
      var names = {};
      d.readings.forEach(function (r) { Object.keys(r.metrics || {}).forEach(function (k) { names[k] = true; }); });
      var cols = ['ts'].concat(Object.keys(names));
      var rows = d.readings.map(function (r) { return cols.map(function (c, i) { return i === 0 ? r.ts : (r.metrics || {})[c]; }); });
      chart($('device-chart'), 'line', cols, rows, alertTs ? [Date.parse(alertTs)] : []);
    }).catch(function (e) { $('device-chart').textContent = 'Error: ' + e.message; });
  }

  // ---- overview ----
  var refreshSet = false;
  function loadOverview() {
    return api('GET', '/api/v1/overview').then(function (d) {
      $('region').textContent = 'region ' + d.region;
      if (!refreshSet) { refreshSet = true; setRefresh(d.refresh_seconds); }
      chart($('h-time'), 'bar', ['minute', 'alerts'], d.alerts_by_minute.map(function (b) { return [b.key.slice(11, 16), b.count]; }));
      chart($('h-site'), 'bar', ['site', 'alerts'], d.alerts_by_site.map(function (b) { return [b.key, b.count]; }));
      chart($('h-kind'), 'bar', ['kind', 'alerts'], d.alerts_by_kind.map(function (b) { return [b.key, b.count]; }));
      var h = d.health, kv = $('health'); clear(kv);
      [['readings ingested', h.ingest_readings], ['readings scored', h.pipeline_readings], ['micro-batches', h.batches], ['mean batch time (ms)', h.batch_mean_ms],
        ['mean post-to-commit (ms)', h.post_to_commit_mean_ms], ['dead letters', h.dlq], ['archived rows', h.archive_rows], ['rows waiting for the archive', h.archive_pending_rows],
        ['object store', h.archive_store_up === 1 ? 'up' : 'DOWN'], ['current model', h.model], ['trainer lease', h.lease]].forEach(function (p) { kv.appendChild(el('span', p[0], 'muted')); kv.appendChild(el('span', fmt(p[1]))); });
      return api('GET', '/api/v1/sites');
    }).then(function (d) {
      var tb = $('sites'); clear(tb);
      d.sites.forEach(function (s) {
        var tr = el('tr');
        [s.region, s.updated_at, fmt(s.ingest_per_s), fmt(s.pipeline_per_s), JSON.stringify(s.health.lag_by_partition), JSON.stringify(s.topic_records), fmt(s.health.archive_pending_rows), s.health.model]
          .forEach(function (v) { tr.appendChild(el('td', v)); });
        tb.appendChild(tr);
      });
    });
  }

  // ---- SQL console ----
  function sampleStatus() {
    return api('GET', '/api/v1/sample').then(function (s) {
      var t = 'sample: ' + s.state;
      if (s.state === 'loading') { t += ' (' + s.objects_done + '/' + s.objects_total + ' objects, ' + Math.round(s.bytes_read / 1024) + ' KiB)'; }
      if (s.state === 'ready') { t += ', ' + s.rows + ' rows from ' + s.objects_total + ' objects (' + (s.fraction * 100) + ' %)'; }
      if (s.error) { t += ': ' + s.error; }
      $('s-status').textContent = t;
      $('s-cancel').hidden = s.state !== 'loading';
      if (s.state === 'loading') { setTimeout(sampleStatus, 300); }
      return s;
    });
  }
  function run(sql, chartType, tableOut, chartOut, status) {
    status.textContent = 'running…';
    return api('POST', '/api/v1/sql', { query: sql }).then(function (res) {
      status.textContent = res.rows.length + ' rows in ' + res.elapsed_ms.toFixed(1) + ' ms' + (res.truncated ? ' (truncated)' : '');
      chart(chartOut, chartType, res.columns, res.rows);
      table(tableOut, res);
    }).catch(function (e) { status.textContent = 'Error: ' + e.message; status.className = 'err'; });
  }
  function localISO(v) { return v ? new Date(v).toISOString() : undefined; }

  // ---- notebooks ----
  function loadNotebooks() {
    return api('GET', '/api/v1/notebooks').then(function (d) {
      var ul = $('nb-list'); clear(ul);
      d.notebooks.forEach(function (n) {
        var li = el('li'); var a = el('a', n.id, 'dev'); a.addEventListener('click', function () { openNotebook(n.id); }); li.appendChild(a);
        li.appendChild(document.createTextNode(' · '));
        var r = el('a', 'report view'); r.href = '/report/' + encodeURIComponent(n.id); li.appendChild(r);
        ul.appendChild(li);
      });
    });
  }
  function paragraphs(container, nb, editable) {
    clear(container);
    nb.paragraphs.forEach(function (p, i) {
      var d = el('div', null, 'para card');
      d.appendChild(el('h4', p.title || ('Paragraph ' + (i + 1))));
      if (editable) { d.appendChild(el('pre', p.sql)); }
      var st = el('div', '', 'muted'), co = el('div', null, 'chart-out'), to = el('div', null, 'scroll');
      d.appendChild(st); d.appendChild(co); if (p.chart === 'table' || editable) { d.appendChild(to); }
      container.appendChild(d);
      var go = function () { run(p.sql, p.chart, to, co, st); };
      go();
      if (!editable && p.refresh > 0) { setInterval(go, p.refresh * 1000); }
    });
  }
  function openNotebook(id) {
    api('GET', '/api/v1/notebooks/' + encodeURIComponent(id)).then(function (nb) {
      var v = $('nb-view'); clear(v);
      var h = el('h3', nb.title); v.appendChild(h);
      var r = el('a', 'open report view'); r.href = '/report/' + encodeURIComponent(nb.id); v.appendChild(r);
      var body = el('div'); v.appendChild(body);
      paragraphs(body, nb, true);
    });
  }
  function addParagraph() {
    var id = $('nb-id').value || 'main';
    var para = { sql: $('q').value, chart: $('q-chart').value, refresh: parseInt($('nb-refresh').value, 10) || 0 };
    api('GET', '/api/v1/notebooks/' + encodeURIComponent(id)).catch(function () { return { title: id, paragraphs: [] }; }).then(function (nb) {
      nb.paragraphs.push(para);
      return api('PUT', '/api/v1/notebooks/' + encodeURIComponent(id), { title: nb.title, paragraphs: nb.paragraphs });
    }).then(function () { $('q-status').textContent = 'saved to notebook ' + id; loadNotebooks(); })
      .catch(function (e) { $('q-status').textContent = 'Error: ' + e.message; });
  }

  // ---- models ----
  function cvSummary(m) {
    var w = (m.cv || []).filter(function (c) { return c.model === m.winner && JSON.stringify(c.params) === JSON.stringify(m.params); })[0];
    if (!w) { return ''; }
    return m.calibration === 'best_f1' ? 'F1 ' + fmt(w.mean_f1) : 'alert-rate error ' + fmt(w.mean_rate_error);
  }
  function showCV(m) {
    $('m-cv-card').hidden = false;
    $('m-cv-title').textContent = 'Cross-validation of ' + m.version + ' (' + (m.calibration || '') + ')';
    var rows = [];
    (m.cv || []).forEach(function (c) {
      (c.folds || []).forEach(function (f) {
        rows.push([c.model, JSON.stringify(c.params), f.fold, f.train_rows, f.test_rows, f.threshold, f.alert_rate, f.precision || '', f.recall || '', f.f1 || '', c.seconds]);
      });
    });
    table($('m-cv'), { columns: ['model', 'params', 'fold', 'train rows', 'test rows', 'threshold', 'alert rate', 'precision', 'recall', 'F1', 'seconds'], rows: rows });
  }
  function loadModels() {
    return api('GET', '/api/v1/models').then(function (d) {
      var me = d.this_process, cur = d.current, kv = $('m-self');
      clear(kv);
      [['running', me.running], ['shadow', me.running_shadow || '—'], ['models/current', cur.version + (cur.shadow ? ' (shadow ' + cur.shadow + ')' : '')],
        ['fence (epoch)', cur.fence], ['this process', me.holder + (me.leading ? ' — the trainer, epoch ' + me.epoch : (me.candidate ? ' — candidate' : ' — not a candidate'))],
        ['training', me.training ? 'now' : 'last trained ' + (me.last_trained_model || '—')], ['problems', me.lease_error || me.swap_error || me.last_training_error || 'none']]
        .forEach(function (p) { kv.appendChild(el('span', p[0], 'muted')); kv.appendChild(el('span', fmt(p[1]))); });
      var tb = $('m-rows');
      clear(tb);
      d.models.forEach(function (m) {
        var tr = el('tr');
        var state = m.version === cur.version ? 'current' : (m.version === cur.shadow ? 'shadow' : (m.epoch < cur.fence ? 'fenced' : ''));
        [m.version, state, (m.created_at || '').slice(0, 19).replace('T', ' '), m.epoch, m.winner, JSON.stringify(m.params), cvSummary(m), fmt(m.threshold),
          (m.data || {}).rows_used, ((m.data || {}).regions || []).join(' ')].forEach(function (v) { tr.appendChild(el('td', v)); });
        var td = el('td');
        var cv = el('button', 'CV', 'view'); cv.addEventListener('click', function () { showCV(m); }); td.appendChild(cv);
        if (state !== 'current') {
          [['promote', 'Promote'], ['shadow', 'Shadow']].forEach(function (a) {
            var b = el('button', a[1]);
            b.addEventListener('click', function () {
              api('POST', '/api/v1/models/' + encodeURIComponent(m.version) + '/' + a[0]).then(function () { $('m-status').textContent = a[1] + 'd ' + m.version; return loadModels(); })
                .catch(function (e) { $('m-status').textContent = 'Error: ' + e.message; });
            });
            td.appendChild(b);
          });
        }
        tr.appendChild(td);
        tb.appendChild(tr);
      });
    });
  }

  // ---- delivery: alert sinks, dead letters, MQTT ----
  function loadDelivery() {
    return api('GET', '/api/v1/delivery').then(function (d) {
      var tb = $('d-sinks'), dead = $('d-dead'); clear(tb); clear(dead);
      $('d-none').hidden = d.sinks.length > 0;
      d.sinks.forEach(function (k) {
        var tr = el('tr');
        [k.name, k.kind, k.url].forEach(function (v) { tr.appendChild(el('td', v)); });
        tr.appendChild(el('td', k.healthy ? 'ok' : 'FAILING', k.healthy ? '' : 'high'));
        [k.delivered, k.failed_tries, k.last_error || '', k.dead_letters.length].forEach(function (v) { tr.appendChild(el('td', v)); });
        tb.appendChild(tr);
        k.dead_letters.forEach(function (x) {
          var r = el('tr'); r.className = 'dead-letter';
          [k.name, x.id, x.alert.device_id, (x.parked_at || '').slice(0, 19).replace('T', ' '), x.tries, x.last_error].forEach(function (v) { r.appendChild(el('td', v)); });
          var td = el('td'), b = el('button', 'Retry');
          b.addEventListener('click', function () {
            api('POST', '/api/v1/sinks/' + encodeURIComponent(k.name) + '/dead-letters/' + encodeURIComponent(x.id) + '/retry')
              .then(function () { $('d-status').textContent = 'delivered ' + x.id; return loadDelivery(); })
              .catch(function (e) { $('d-status').textContent = 'Error: ' + e.message; });
          });
          td.appendChild(b); r.appendChild(td); dead.appendChild(r);
        });
      });
      var kv = $('d-mqtt'); clear(kv);
      var m = d.mqtt, rows = [['listener', m.listener_addr || 'off (mqtt.addr)'], ['connected clients', m.clients]];
      if (m.bridge) { rows.push(['bridge', m.bridge.url + ' ' + m.bridge.filter], ['bridge state', (m.bridge.connected ? 'connected' : 'DISCONNECTED') + ' since ' + (m.bridge.since || '').slice(0, 19).replace('T', ' ') + (m.bridge.last_error ? ' (' + m.bridge.last_error + ', ' + m.bridge.failed_attempts + ' failed attempts)' : '')]); }
      rows.forEach(function (p) { kv.appendChild(el('span', p[0], 'muted')); kv.appendChild(el('span', fmt(p[1]))); });
    });
  }

  // ---- tabs, refresh ----
  var current = 'alerts', timer = null;
  function show(tab) {
    current = tab;
    document.querySelectorAll('section').forEach(function (s) { s.classList.toggle('on', s.id === tab); });
    document.querySelectorAll('#tabs button').forEach(function (b) { b.classList.toggle('on', b.dataset.tab === tab); });
    refresh();
  }
  function refresh() {
    var p = current === 'alerts' ? loadAlerts() : current === 'overview' ? loadOverview() : current === 'notebooks' ? loadNotebooks() : current === 'sql' ? sampleStatus() : current === 'models' ? loadModels() : current === 'delivery' ? loadDelivery() : Promise.resolve();
    if (current !== 'overview' && !refreshSet) { api('GET', '/api/v1/overview').then(function (d) { $('region').textContent = 'region ' + d.region; if (!refreshSet) { refreshSet = true; setRefresh(d.refresh_seconds); } }).catch(function () {}); }
    return p.then(function () { $('updated').textContent = 'updated ' + new Date().toLocaleTimeString(); }).catch(function (e) { $('updated').textContent = e.message; });
  }
  function setRefresh(sec) {
    var sel = $('refresh'), found = false;
    Array.prototype.forEach.call(sel.options, function (o) { if (o.value === String(sec)) { found = true; } });
    if (!found) { var o = el('option', sec + ' s'); o.value = String(sec); sel.appendChild(o); }
    sel.value = String(sec);
    if (timer) { clearInterval(timer); }
    if (sec > 0) { timer = setInterval(refresh, sec * 1000); }
  }

  if (location.pathname.indexOf('/report/') === 0) {
    var id = decodeURIComponent(location.pathname.slice(8));
    $('tabs').hidden = true;
    document.querySelectorAll('section').forEach(function (s) { s.classList.toggle('on', s.id === 'report'); });
    api('GET', '/api/v1/notebooks/' + encodeURIComponent(id)).then(function (nb) {
      $('report-title').textContent = nb.title;
      paragraphs($('report-body'), nb, false);
    }).catch(function (e) { $('report-title').textContent = 'Error: ' + e.message; });
    return;
  }
  document.querySelectorAll('#tabs button').forEach(function (b) { b.addEventListener('click', function () { show(b.dataset.tab); }); });
  $('refresh').addEventListener('change', function () { refreshSet = true; setRefresh(parseInt($('refresh').value, 10)); });
  $('f-apply').addEventListener('click', loadAlerts);
  $('logout').addEventListener('click', function () {
    localStorage.removeItem('vigil.token');
    token = '';
    $('login').hidden = false;
  });
  $('device-close').addEventListener('click', function () { $('device-panel').hidden = true; });
  $('s-load').addEventListener('click', function () {
    var f = parseFloat($('s-fraction').value);
    api('POST', '/api/v1/sample', { fraction: isNaN(f) ? 0 : f, from: localISO($('s-from').value), to: localISO($('s-to').value) })
      .then(sampleStatus).catch(function (e) { $('s-status').textContent = 'Error: ' + e.message; });
  });
  $('s-cancel').addEventListener('click', function () {
    api('DELETE', '/api/v1/sample').then(sampleStatus).catch(function (e) { $('s-status').textContent = 'Error: ' + e.message; });
  });
  $('q-run').addEventListener('click', function () { $('q-status').className = 'muted'; run($('q').value, $('q-chart').value, $('q-out'), $('q-chart-out'), $('q-status')); });
  $('q-stats').addEventListener('click', function () { $('q-status').className = 'muted'; run('SUMMARIZE enriched', 'table', $('q-out'), $('q-chart-out'), $('q-status')); });
  $('nb-add').addEventListener('click', addParagraph);
  $('m-train').addEventListener('click', function () {
    api('POST', '/api/v1/models/train').then(function (d) { $('m-status').textContent = 'training requested (trainer: ' + (d.trainer || 'none yet') + ')'; })
      .catch(function (e) { $('m-status').textContent = 'Error: ' + e.message; });
  });
  $('m-rollback').addEventListener('click', function () {
    api('POST', '/api/v1/models/rollback').then(function (c) { $('m-status').textContent = 'rolled back to ' + c.version; return loadModels(); })
      .catch(function (e) { $('m-status').textContent = 'Error: ' + e.message; });
  });
  // a viewer token reads: the buttons that would change something go
  api('GET', '/api/v1/whoami').then(function (w) { document.body.classList.toggle('viewer', w.role === 'viewer'); }).catch(function () {});
  // a notification's link, /?alert=<id>: that alert's device and readings
  var linked = q.get('alert');
  if (linked) {
    api('GET', '/api/v1/alerts/' + encodeURIComponent(linked)).then(function (a) { $('f-device').value = a.device_id; loadAlerts(); showDevice(a.device_id, a.ts); }).catch(function () {});
  }
  show('alerts');
})();
