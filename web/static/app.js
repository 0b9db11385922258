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
  // ---- charts: uPlot (vendored, web/static/vendor/uplot) ----
  var palette = ['#2f6fbf', '#d1495b', '#0f8b7d', '#c77d00', '#7b3fa0', '#4d5866', '#29335c', '#6a8d2f'];
  var charts = [];
  function fmtTime(sec) { var d = new Date(sec * 1000); return d.toISOString().replace('T', ' ').slice(0, 19) + ' UTC'; }
  // tooltip: the values under the cursor, in a box that follows it
  function tooltipPlugin(cfg) {
    var tip;
    return {
      hooks: {
        init: function (u) { tip = el('div', '', 'u-tooltip'); tip.setAttribute('role', 'tooltip'); u.over.appendChild(tip); },
        setCursor: function (u) {
          var i = u.cursor.idx;
          if (i === null || i === undefined) { tip.style.display = 'none'; return; }
          var x = u.data[0][i], lines = [cfg.labels ? cfg.labels[x] : (cfg.xTime ? fmtTime(x) : fmt(x))];
          for (var s = 1; s < u.series.length; s++) {
            if (!u.series[s].show || u.series[s].tip === false) { continue; }
            var v = u.data[s][i];
            if (v !== null && v !== undefined) { lines.push(u.series[s].label + ': ' + fmt(v) + (u.series[s].unit ? ' ' + u.series[s].unit : '')); }
          }
          tip.textContent = lines.join('\n');
          tip.style.display = 'block';
          var left = u.cursor.left, top = u.cursor.top;
          tip.style.left = Math.min(left + 12, u.over.clientWidth - tip.offsetWidth) + 'px';
          tip.style.top = Math.max(top - tip.offsetHeight - 8, 0) + 'px';
        }
      }
    };
  }
  // spans (incidents) shaded under the series, marks (alerts) as lines
  function decorPlugin(cfg) {
    return {
      hooks: {
        drawClear: function (u) {
          var ctx = u.ctx; ctx.save(); ctx.fillStyle = 'rgba(209,73,91,0.14)';
          (cfg.spans || []).forEach(function (s) {
            var x0 = u.valToPos(s[0], 'x', true), x1 = u.valToPos(s[1], 'x', true);
            ctx.fillRect(Math.min(x0, x1), u.bbox.top, Math.max(Math.abs(x1 - x0), 3), u.bbox.height);
          });
          ctx.restore();
        },
        draw: function (u) {
          var ctx = u.ctx; ctx.save(); ctx.strokeStyle = '#b00020'; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5;
          (cfg.marks || []).forEach(function (m) {
            var x = u.valToPos(m, 'x', true);
            ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          });
          ctx.restore();
        }
      }
    };
  }
  // chart draws a uPlot chart in container. cfg: xs, series [{label, values,
  // unit, color, dash, points, band}], bands [[hi, lo]] (series indexes),
  // xTime, labels (categorical x), bars, yLabel, xLabel, spans, marks, height.
  function chart(container, cfg) {
    clear(container);
    if (!cfg.xs.length) { container.appendChild(el('p', 'no data', 'muted')); return null; }
    var width = Math.max(260, (container.clientWidth || container.parentNode.clientWidth || 600) - 4);
    var series = [{ label: cfg.xLabel || (cfg.xTime ? 'time' : 'x') }];
    cfg.series.forEach(function (s, k) {
      var o = { label: s.label, unit: s.unit, stroke: s.color || palette[k % palette.length], width: s.width || 1.5, points: { show: !!s.points, size: s.points || 4 } };
      if (s.dash) { o.dash = s.dash; }
      if (s.band) { o.stroke = 'rgba(47,111,191,0.35)'; o.width = 1; o.tip = s.tip; }
      if (s.points && s.noLine) { o.paths = function () { return null; }; o.points = { show: true, size: s.points, fill: s.color, stroke: s.color }; }
      if (cfg.bars) { o.paths = uPlot.paths.bars({ size: [0.7, 60] }); o.fill = s.color || palette[k % palette.length]; o.points = { show: false }; }
      series.push(o);
    });
    var xAxis = { label: cfg.xLabel, stroke: '#333', grid: { stroke: '#eef0f4' } };
    if (cfg.labels) {
      xAxis.values = function (u, splits) { return splits.map(function (i) { return Number.isInteger(i) && cfg.labels[i] !== undefined ? String(cfg.labels[i]).slice(0, 14) : ''; }); };
      xAxis.splits = function () { var out = [], n = cfg.labels.length, step = Math.max(1, Math.ceil(n / 12)); for (var i = 0; i < n; i += step) { out.push(i); } return out; };
    }
    var xScale = cfg.labels ? { time: false, range: function () { return [-0.5, cfg.labels.length - 0.5]; } } : { time: !!cfg.xTime };
    if (!cfg.labels && cfg.xs.length === 1) { var x0 = cfg.xs[0]; xScale.range = function () { return [x0 - 60, x0 + 60]; }; }
    var opts = {
      width: width, height: cfg.height || 220,
      scales: { x: xScale },
      axes: [xAxis, { label: cfg.yLabel, stroke: '#333', grid: { stroke: '#eef0f4' }, size: 60 }],
      series: series,
      bands: (cfg.bands || []).map(function (b) { return { series: b, fill: 'rgba(47,111,191,0.12)' }; }),
      cursor: { drag: { x: true, y: false } },
      legend: { live: false },
      plugins: [tooltipPlugin(cfg), decorPlugin(cfg)]
    };
    var u = new uPlot(opts, [cfg.xs].concat(cfg.series.map(function (s) { return s.values; })), container);
    u.root.setAttribute('role', 'img');
    u.root.setAttribute('aria-label', (cfg.title || 'chart') + ': ' + cfg.series.filter(function (s) { return !s.band; }).map(function (s) { return s.label; }).join(', '));
    container.dataset.points = String(cfg.xs.length);
    container.dataset.band = (cfg.bands || []).length ? '1' : '0';
    container.dataset.spans = String((cfg.spans || []).length);
    container.dataset.marks = String((cfg.marks || []).length);
    charts.push({ u: u, c: container });
    return u;
  }
  window.addEventListener('resize', function () {
    charts = charts.filter(function (x) { return document.body.contains(x.c); });
    charts.forEach(function (x) { x.u.setSize({ width: Math.max(260, x.c.clientWidth - 4), height: x.u.height }); });
  });
  // bars of labelled counts
  function barChart(container, title, labels, values, yLabel) {
    return chart(container, { title: title, xs: labels.map(function (_, i) { return i; }), labels: labels, bars: true, height: 200, yLabel: yLabel,
      series: [{ label: yLabel, values: values }] });
  }
  // sqlChart draws a query result: bar, line, scatter or histogram
  function sqlChart(container, type, columns, rows) {
    clear(container);
    if (type === 'table' || !rows.length) { return; }
    if (type === 'bar') { barChart(container, 'query', rows.map(function (r) { return fmt(r[0]); }), rows.map(function (r) { return num(r[1]) || 0; }), columns[1]); return; }
    if (type === 'histogram') {
      var xs = rows.map(function (r) { return num(r[0]); }).filter(function (v) { return v !== null; });
      if (!xs.length) { return; }
      var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs), nb = 20, bins = new Array(nb).fill(0), labels = [];
      xs.forEach(function (v) { bins[hi === lo ? 0 : Math.min(nb - 1, Math.floor((v - lo) / (hi - lo) * nb))]++; });
      for (var i = 0; i < nb; i++) { labels.push(fmt(lo + (hi - lo) * i / nb)); }
      barChart(container, 'histogram of ' + columns[0], labels, bins, 'count');
      return;
    }
    var xt = isTime(rows[0][0]);
    var order = rows.map(function (r, i) { return i; });
    var X = rows.map(function (r) { var v = num(r[0]); return xt && v !== null ? v / 1000 : v; });
    order.sort(function (a, b) { return X[a] - X[b]; });
    var series = [];
    for (var j = 1; j < columns.length; j++) {
      var ys = order.map(function (i) { return num(rows[i][j]); });
      if (ys.some(function (v) { return v !== null; })) { series.push({ label: columns[j], values: ys, points: type === 'scatter' ? 4 : 0, noLine: type === 'scatter', color: palette[(j - 1) % palette.length] }); }
    }
    if (!series.length) { return; }
    chart(container, { title: 'query', xTime: xt, xLabel: columns[0], xs: order.map(function (i) { return X[i]; }), series: series });
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

  // ---- navigation: every view has its own address ----
  function link(text, href, cls) { var a = el('a', text, cls); a.href = href; a.addEventListener('click', function (e) { if (e.ctrlKey || e.metaKey || e.shiftKey) { return; } e.preventDefault(); go(href); }); return a; }
  function go(href) { history.pushState(null, '', href); route(); }
  function sec(iso) { return Date.parse(iso) / 1000; }
  function when(iso) { return iso ? iso.replace('T', ' ').slice(0, 19) : ''; }
  function reasonWords(r) {
    return r.feature + (r.text ? ': ' + r.text : ' ' + fmt(r.value)) + (r.detector ? ' (' + r.detector + ')' : '');
  }
  function verdictCell(a, after) {
    var v = el('td');
    if (a.feedback) { v.textContent = a.feedback.label === 'anomaly' ? 'true alert' : 'false alert'; return v; }
    ['anomaly', 'normal'].forEach(function (lbl) {
      var b = el('button', lbl === 'anomaly' ? 'true' : 'false');
      b.title = lbl === 'anomaly' ? 'a real anomaly' : 'a false alert';
      b.setAttribute('aria-label', (lbl === 'anomaly' ? 'mark a true alert: ' : 'mark a false alert: ') + a.device_id + ' ' + when(a.ts));
      b.addEventListener('click', function () { api('POST', '/api/v1/alerts/' + encodeURIComponent(a.alert_id) + '/feedback', { label: lbl, note: '' }).then(after); });
      v.appendChild(b);
    });
    return v;
  }

  // ---- alerts list ----
  function loadAlerts() {
    var p = new URLSearchParams({ limit: '1000' });
    if ($('f-device').value) { p.set('device', $('f-device').value); }
    if ($('f-site').value) { p.set('site', $('f-site').value); }
    if ($('f-severity').value) { p.set('severity', $('f-severity').value); }
    return api('GET', '/api/v1/alerts?' + p).then(function (d) {
      var tb = $('alert-rows'), frag = document.createDocumentFragment();
      d.alerts.forEach(function (a) {
        var tr = el('tr'); tr.className = 'alert';
        tr.appendChild(el('td', when(a.detected_at)));
        var ta = el('td'); ta.appendChild(link('explain', '/alerts/' + encodeURIComponent(a.alert_id), 'explain')); tr.appendChild(ta);
        var td = el('td'); td.appendChild(link(a.device_id, '/devices/' + encodeURIComponent(a.device_id), 'dev')); tr.appendChild(td);
        tr.appendChild(el('td', a.site || ''));
        tr.appendChild(el('td', when(a.ts)));
        tr.appendChild(el('td', a.score.toFixed(3)));
        tr.appendChild(el('td', a.severity, a.severity));
        tr.appendChild(el('td', a.state + (a.accepted ? ' (new normal)' : '')));
        tr.appendChild(el('td', a.readings));
        tr.appendChild(el('td', (a.reasons || []).slice(0, 2).map(reasonWords).join('; ')));
        tr.appendChild(verdictCell(a, loadAlerts));
        frag.appendChild(tr);
      });
      clear(tb); tb.appendChild(frag);
      $('alert-count').textContent = d.alerts.length + ' alerts';
    });
  }

  // ---- alert view: /alerts/<id> ----
  var currentAlert = null;
  function loadAlert(id) {
    return api('GET', '/api/v1/alerts/' + encodeURIComponent(id)).then(function (a) {
      currentAlert = a;
      $('alert-title').textContent = a.severity + ' alert on ' + a.device_id + (a.metric ? ' (' + a.metric + ')' : '') + ' — ' + a.state;
      var dl = $('alert-device-link'); dl.textContent = 'device ' + a.device_id + ': readings, band and incidents'; dl.href = '/devices/' + encodeURIComponent(a.device_id) + '?at=' + encodeURIComponent(a.ts);
      var why = $('alert-why'); clear(why);
      (a.reasons || []).forEach(function (r) {
        var li = el('li');
        li.appendChild(el('strong', r.detector ? r.detector + ' detector' : r.feature));
        var words = r.text || (r.feature + ' = ' + fmt(r.value));
        if (!r.text && r.high > r.low) { words += ' (expected ' + fmt(r.expected) + ', usual ' + fmt(r.low) + '–' + fmt(r.high) + ', observed ' + fmt(r.observed) + ')'; }
        li.appendChild(document.createTextNode(': ' + words + ' — ' + r.feature + ', contribution ' + fmt(r.contribution)));
        why.appendChild(li);
      });
      if (!(a.reasons || []).length) { why.appendChild(el('li', 'score ' + fmt(a.score) + ' from ' + a.model)); }
      var tl = $('alert-timeline'); clear(tl);
      [['opened', when(a.ts) + ' (event time), detected ' + when(a.detected_at) + ', score ' + fmt(a.score)],
        ['peak', 'score ' + fmt(a.max_score || a.score)],
        a.accepted ? ['accepted as the new normal', 'the change lasted pipeline.accept_after'] : null,
        a.state === 'closed' ? ['closed', when(a.last_ts) + ' after ' + a.readings + ' readings'] : ['still open', a.readings + ' readings so far, last ' + when(a.last_ts)]]
        .filter(Boolean).forEach(function (p) { var li = el('li'); li.appendChild(el('strong', p[0])); li.appendChild(document.createTextNode(': ' + p[1])); tl.appendChild(li); });
      $('alert-verdict').textContent = a.feedback ? 'marked ' + (a.feedback.label === 'anomaly' ? 'a true alert' : 'a false alert') + (a.feedback.note ? ': ' + a.feedback.note : '') : 'no verdict yet';
      var t = sec(a.ts), end = a.last_ts ? sec(a.last_ts) : t;
      var from = new Date((t - 1800) * 1000).toISOString(), to = new Date((Math.max(end, t) + 900) * 1000).toISOString();
      return api('GET', '/api/v1/devices/' + encodeURIComponent(a.device_id) + '/readings?limit=1500&from=' + encodeURIComponent(from) + '&to=' + encodeURIComponent(to)).then(function (d) {
        var metric = a.metric || Object.keys((d.readings[0] || {}).metrics || {})[0];
        metricPane($('alert-chart'), d.readings, metric, [[t, Math.max(end, t + 1)]], [t]);
        $('alert-chart-note').textContent = d.readings.length + ' readings of ' + metric + ' from ' + d.sources.join(' and ') + '; the incident shaded, the alert marked.';
      });
    });
  }
  function feedback(label) {
    if (!currentAlert) { return; }
    api('POST', '/api/v1/alerts/' + encodeURIComponent(currentAlert.alert_id) + '/feedback', { label: label, note: $('alert-note').value })
      .then(function () { return loadAlert(currentAlert.alert_id); }).catch(function (e) { $('alert-verdict').textContent = 'Error: ' + e.message; });
  }

  // ---- device view: /devices/<id> ----
  function metricPane(container, readings, m, spans, marks) {
    var xs = [], v = [], lo = [], hi = [];
    readings.forEach(function (r) {
      var val = (r.metrics || {})[m];
      if (val === undefined) { return; }
      var b = (r.band || {})[m];
      xs.push(sec(r.ts)); v.push(val); lo.push(b ? b[0] : null); hi.push(b ? b[1] : null);
    });
    var hasBand = lo.some(function (x) { return x !== null; });
    var series = [{ label: m, values: v, color: palette[0] }];
    var cfg = { title: m, xTime: true, xs: xs, yLabel: m, series: series, spans: spans, marks: marks, height: 180 };
    if (hasBand) { series.push({ label: 'expected high', values: hi, band: true }, { label: 'expected low', values: lo, band: true }); cfg.bands = [[2, 3]]; }
    return chart(container, cfg);
  }
  var deviceRange = '1h';
  function loadDevice(id) {
    $('device-title').textContent = 'Device ' + id;
    document.querySelectorAll('.ranges button').forEach(function (b) { b.setAttribute('aria-pressed', String(b.dataset.range === deviceRange)); });
    var attrs = api('GET', '/api/v1/devices/' + encodeURIComponent(id)).catch(function () { return { device_id: id }; });
    var alerts = api('GET', '/api/v1/alerts?device=' + encodeURIComponent(id));
    var readings = api('GET', '/api/v1/devices/' + encodeURIComponent(id) + '/readings?limit=1500&range=' + deviceRange);
    return Promise.all([attrs, alerts, readings]).then(function (res) {
      var dv = res[0], al = res[1].alerts, d = res[2];
      var kv = $('device-attrs'); clear(kv);
      [['site', dv.site], ['model', dv.model], ['location', dv.lat !== undefined ? fmt(dv.lat) + ', ' + fmt(dv.lon) : ''], ['tags', (dv.tags || []).join(', ')],
        ['registered', when(dv.created_at)]].concat(Object.keys(dv.attrs || {}).map(function (k) { return [k, dv.attrs[k]]; }))
        .forEach(function (p) { if (p[1]) { kv.appendChild(el('span', p[0], 'muted')); kv.appendChild(el('span', p[1])); } });
      $('device-source').textContent = d.readings.length + ' readings from ' + d.sources.join(' and ') + (d.archive_rows ? ' (' + d.archive_rows + ' from the archive)' : '') + (d.capped ? '; ' + d.capped : '');
      var spans = al.map(function (a) { return [sec(a.ts), a.state === 'closed' && a.last_ts ? sec(a.last_ts) : Date.now() / 1000]; });
      var marks = al.map(function (a) { return sec(a.ts); });
      var names = {};
      d.readings.forEach(function (r) { Object.keys(r.metrics || {}).forEach(function (k) { names[k] = true; }); });
      var panes = $('device-panes'); clear(panes);
      Object.keys(names).sort().forEach(function (m) {
        var p = el('div', null, 'pane metric-pane'); p.dataset.metric = m; panes.appendChild(p);
        metricPane(p, d.readings, m, spans, marks);
      });
      var sp = el('div', null, 'pane score-pane'); panes.appendChild(sp);
      var thr = (d.readings[0] || {}).threshold || 0.8;
      chart(sp, { title: 'score', xTime: true, yLabel: 'score', height: 140, spans: spans, marks: marks, xs: d.readings.map(function (r) { return sec(r.ts); }),
        series: [{ label: 'score', values: d.readings.map(function (r) { return r.score; }), color: palette[1] }, { label: 'threshold', values: d.readings.map(function () { return thr; }), color: '#888', dash: [4, 4] }] });
      var tb = $('device-alerts'); clear(tb);
      al.forEach(function (a) {
        var tr = el('tr'); tr.className = 'alert';
        tr.appendChild(el('td', when(a.ts)));
        var ta = el('td'); ta.appendChild(link('explain', '/alerts/' + encodeURIComponent(a.alert_id), 'explain')); tr.appendChild(ta);
        [a.metric || 'multivariate', a.score.toFixed(3), a.state, a.readings].forEach(function (v) { tr.appendChild(el('td', v)); });
        tr.appendChild(verdictCell(a, function () { return loadDevice(id); }));
        tb.appendChild(tr);
      });
      document.body.dataset.deviceLoaded = id + ':' + deviceRange;
    });
  }

  // ---- fleet view: /fleet ----
  var fleetDevices = [];
  function drawMap(devs) {
    var c = $('fleet-map'), ctx = c.getContext('2d');
    var pts = devs.filter(function (d) { return typeof d.lat === 'number' && typeof d.lon === 'number'; });
    ctx.fillStyle = '#fbfcfe'; ctx.fillRect(0, 0, c.width, c.height);
    $('fleet-map-note').textContent = pts.length + ' of ' + devs.length + ' devices have a position';
    c.setAttribute('aria-label', 'Map of ' + pts.length + ' devices: ' + pts.filter(function (d) { return d.state === 'open'; }).length + ' with an incident open, ' +
      pts.filter(function (d) { return d.state === 'recent'; }).length + ' alerted in 24 h');
    if (!pts.length) { fleetDevices = []; return; }
    var la0 = Infinity, la1 = -Infinity, lo0 = Infinity, lo1 = -Infinity;
    pts.forEach(function (d) { la0 = Math.min(la0, d.lat); la1 = Math.max(la1, d.lat); lo0 = Math.min(lo0, d.lon); lo1 = Math.max(lo1, d.lon); });
    var padLa = Math.max((la1 - la0) * 0.08, 0.5), padLo = Math.max((lo1 - lo0) * 0.08, 0.5);
    la0 -= padLa; la1 += padLa; lo0 -= padLo; lo1 += padLo;
    // equirectangular, scaled by cos(mean latitude) so shapes are not stretched
    var k = Math.cos((la0 + la1) / 2 * Math.PI / 180), w = (lo1 - lo0) * k, h = la1 - la0;
    var s = Math.min((c.width - 40) / w, (c.height - 40) / h), ox = (c.width - w * s) / 2, oy = (c.height - h * s) / 2;
    ctx.strokeStyle = '#e1e4ea'; ctx.fillStyle = '#596070'; ctx.font = '11px system-ui';
    for (var g = 0; g <= 4; g++) {
      var gy = oy + h * s * g / 4, gx = ox + w * s * g / 4;
      ctx.beginPath(); ctx.moveTo(ox, gy); ctx.lineTo(ox + w * s, gy); ctx.moveTo(gx, oy); ctx.lineTo(gx, oy + h * s); ctx.stroke();
      ctx.fillText(fmt(la1 - h * g / 4) + '°', 2, gy + 4); ctx.fillText(fmt(lo0 + (lo1 - lo0) * g / 4) + '°', gx - 10, c.height - 4);
    }
    var colour = { ok: '#1f8a4c', recent: '#d08000', open: '#c0002a' };
    fleetDevices = [];
    ['ok', 'recent', 'open'].forEach(function (state) { // the worst drawn last, on top
      ctx.fillStyle = colour[state];
      pts.forEach(function (d) {
        if (d.state !== state) { return; }
        var x = ox + (d.lon - lo0) * k * s, y = oy + (la1 - d.lat) * s;
        ctx.beginPath(); ctx.arc(x, y, state === 'ok' ? 2.5 : 4, 0, 2 * Math.PI); ctx.fill();
        fleetDevices.push({ id: d.id, x: x, y: y });
      });
    });
  }
  function loadFleet() {
    return Promise.all([api('GET', '/api/v1/fleet'), api('GET', '/api/v1/sites')]).then(function (res) {
      var f = res[0];
      drawMap(f.devices);
      var tb = $('fleet-sites'); clear(tb);
      f.sites.forEach(function (s) {
        var tr = el('tr');
        [s.site, s.devices, s.alerts_24h, fmt(s.alerts_per_device_day), s.open_incidents].forEach(function (v) { tr.appendChild(el('td', v)); });
        tr.appendChild(el('td', s.health, s.health === 'ok' ? '' : 'high'));
        tb.appendChild(tr);
      });
      var nd = $('fleet-noisy'); clear(nd);
      f.noisiest_devices.forEach(function (n) { var tr = el('tr'), td = el('td'); td.appendChild(link(n.key, '/devices/' + encodeURIComponent(n.key), 'dev')); tr.appendChild(td); tr.appendChild(el('td', n.alerts_24h)); tr.appendChild(el('td', fmt(n.alerts_per_device_day))); nd.appendChild(tr); });
      var nm = $('fleet-metrics'); clear(nm);
      f.noisiest_metrics.forEach(function (n) { var tr = el('tr'); [n.key, n.alerts_24h, fmt(n.alerts_per_device_day)].forEach(function (v) { tr.appendChild(el('td', v)); }); nm.appendChild(tr); });
      regionsTable($('fleet-regions'), res[1].sites);
    });
  }
  function regionsTable(tb, sites) {
    clear(tb);
    sites.forEach(function (s) {
      var lag = 0; Object.keys(s.health.lag_by_partition || {}).forEach(function (p) { lag += s.health.lag_by_partition[p]; });
      var tr = el('tr');
      [s.region, when(s.updated_at), fmt(s.ingest_per_s), fmt(s.pipeline_per_s), fmt(lag), fmt(s.health.archive_pending_rows), s.health.model].forEach(function (v) { tr.appendChild(el('td', v)); });
      tb.appendChild(tr);
    });
  }

  // ---- overview ----
  var refreshSet = false;
  function loadOverview() {
    return api('GET', '/api/v1/overview').then(function (d) {
      $('region').textContent = 'region ' + d.region;
      if (!refreshSet) { refreshSet = true; setRefresh(d.refresh_seconds); }
      var hs = d.history || [], xs = hs.map(function (p) { return sec(p.t); });
      var col = function (k) { return hs.map(function (p) { return p[k]; }); };
      chart($('ts-rate'), { title: 'throughput', xTime: true, xs: xs, yLabel: 'readings/s', series: [{ label: 'ingested', unit: '/s', values: col('ingest_per_s') }, { label: 'scored', unit: '/s', values: col('pipeline_per_s') }] });
      chart($('ts-lag'), { title: 'lag', xTime: true, xs: xs, yLabel: 'records', series: [{ label: 'lag', unit: 'records', values: col('lag') }] });
      chart($('ts-batch'), { title: 'batch time', xTime: true, xs: xs, yLabel: 'ms', series: [{ label: 'mean batch', unit: 'ms', values: col('batch_mean_ms') }] });
      chart($('ts-archive'), { title: 'archive backlog', xTime: true, xs: xs, yLabel: 'rows', series: [{ label: 'rows waiting', unit: 'rows', values: col('archive_pending_rows') }] });
      chart($('h-time'), { title: 'alerts per minute', xTime: true, bars: true, xs: d.alerts_by_minute.map(function (b) { return sec(b.key); }), yLabel: 'alerts', series: [{ label: 'alerts', values: d.alerts_by_minute.map(function (b) { return b.count; }) }] });
      barChart($('h-site'), 'alerts by site', d.alerts_by_site.map(function (b) { return b.key; }), d.alerts_by_site.map(function (b) { return b.count; }), 'alerts');
      barChart($('h-kind'), 'alerts by kind', d.alerts_by_kind.map(function (b) { return b.key || 'multivariate'; }), d.alerts_by_kind.map(function (b) { return b.count; }), 'alerts');
      var h = d.health, kv = $('health'); clear(kv);
      [['readings ingested', h.ingest_readings], ['readings scored', h.pipeline_readings], ['micro-batches', h.batches], ['mean batch time (ms)', h.batch_mean_ms],
        ['mean post-to-commit (ms)', h.post_to_commit_mean_ms], ['dead letters', h.dlq], ['archived rows', h.archive_rows], ['rows waiting for the archive', h.archive_pending_rows],
        ['object store', h.archive_store_up === 1 ? 'up' : 'DOWN'], ['current model', h.model], ['trainer lease', h.lease]].forEach(function (p) { kv.appendChild(el('span', p[0], 'muted')); kv.appendChild(el('span', fmt(p[1]))); });
      return api('GET', '/api/v1/sites');
    }).then(function (d) {
      regionsTable($('sites'), d.sites);
      var tt = $('topics'); clear(tt);
      d.sites.forEach(function (s) {
        Object.keys(s.topic_records || {}).sort().forEach(function (t) { var tr = el('tr'); [s.region, t, s.topic_records[t]].forEach(function (v) { tr.appendChild(el('td', v)); }); tt.appendChild(tr); });
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
      sqlChart(chartOut, chartType, res.columns, res.rows);
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

  // ---- views, tabs, refresh ----
  var current = 'alerts', timer = null, viewArg = '';
  var loaders = { alerts: loadAlerts, fleet: loadFleet, overview: loadOverview, notebooks: loadNotebooks, sql: sampleStatus, models: loadModels, delivery: loadDelivery };
  function show(view, arg) {
    current = view; viewArg = arg || '';
    document.querySelectorAll('main section').forEach(function (s) { s.classList.toggle('on', s.id === view); });
    var tab = view === 'alert' || view === 'device' ? 'alerts' : view;
    document.querySelectorAll('#tabs button').forEach(function (b) { b.classList.toggle('on', b.dataset.tab === tab); b.setAttribute('aria-current', b.dataset.tab === tab ? 'page' : 'false'); });
    return refresh(true);
  }
  function refresh(first) {
    var p;
    if (current === 'alert') { p = first ? loadAlert(viewArg) : Promise.resolve(); } else if (current === 'device') { p = first ? loadDevice(viewArg) : Promise.resolve(); } else { p = (loaders[current] || function () { return Promise.resolve(); })(); }
    if (current !== 'overview' && !refreshSet) { api('GET', '/api/v1/overview').then(function (d) { $('region').textContent = 'region ' + d.region; if (!refreshSet) { refreshSet = true; setRefresh(d.refresh_seconds); } }).catch(function () {}); }
    return p.then(function () {
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      document.body.dataset.ready = current;
      if (!window.vigilReadyAt) { window.vigilReadyAt = performance.now(); } // interactive: the first view drawn
    })
      .catch(function (e) { $('updated').textContent = e.message; });
  }
  function setRefresh(sec) {
    var sel = $('refresh'), found = false;
    Array.prototype.forEach.call(sel.options, function (o) { if (o.value === String(sec)) { found = true; } });
    if (!found) { var o = el('option', sec + ' s'); o.value = String(sec); sel.appendChild(o); }
    sel.value = String(sec);
    if (timer) { clearInterval(timer); }
    if (sec > 0) { timer = setInterval(function () { refresh(false); }, sec * 1000); }
  }
  function route() {
    var path = location.pathname, m;
    if ((m = path.match(/^\/alerts\/(.+)$/))) { return show('alert', decodeURIComponent(m[1])); }
    if ((m = path.match(/^\/devices\/(.+)$/))) { return show('device', decodeURIComponent(m[1])); }
    if (path === '/fleet') { return show('fleet'); }
    return show(current === 'alert' || current === 'device' || current === 'fleet' ? 'alerts' : current);
  }

  if (location.pathname.indexOf('/report/') === 0) {
    var id = decodeURIComponent(location.pathname.slice(8));
    $('tabs').hidden = true;
    document.querySelectorAll('main section').forEach(function (s) { s.classList.toggle('on', s.id === 'report'); });
    api('GET', '/api/v1/notebooks/' + encodeURIComponent(id)).then(function (nb) {
      $('report-title').textContent = nb.title;
      paragraphs($('report-body'), nb, false);
    }).catch(function (e) { $('report-title').textContent = 'Error: ' + e.message; });
    return;
  }
  document.querySelectorAll('#tabs button').forEach(function (b) {
    b.addEventListener('click', function () {
      var target = b.dataset.tab === 'fleet' ? '/fleet' : '/';
      if (location.pathname !== target) { history.pushState(null, '', target); }
      show(b.dataset.tab);
    });
  });
  window.addEventListener('popstate', route);
  document.querySelectorAll('.ranges button').forEach(function (b) {
    b.addEventListener('click', function () { deviceRange = b.dataset.range; if (current === 'device') { loadDevice(viewArg); } });
  });
  $('fleet-map').addEventListener('click', function (e) {
    var c = $('fleet-map'), r = c.getBoundingClientRect(), x = (e.clientX - r.left) * c.width / r.width, y = (e.clientY - r.top) * c.height / r.height, best = null, bd = 100;
    fleetDevices.forEach(function (d) { var dd = (d.x - x) * (d.x - x) + (d.y - y) * (d.y - y); if (dd < bd) { bd = dd; best = d; } });
    if (best) { go('/devices/' + encodeURIComponent(best.id)); }
  });
  $('alert-true').addEventListener('click', function () { feedback('anomaly'); });
  $('alert-false').addEventListener('click', function () { feedback('normal'); });
  $('refresh').addEventListener('change', function () { refreshSet = true; setRefresh(parseInt($('refresh').value, 10)); });
  $('f-apply').addEventListener('click', loadAlerts);
  $('logout').addEventListener('click', function () {
    localStorage.removeItem('vigil.token');
    token = '';
    $('login').hidden = false;
  });
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
  // an older notification's link, /?alert=<id>
  var linked = q.get('alert');
  if (linked) { history.replaceState(null, '', '/alerts/' + encodeURIComponent(linked)); }
  route();
})();
