#!/usr/bin/env bash
# Vendors the status page's chart library (uPlot) into web/static/vendor and
# the accessibility audit the browser tests run (axe-core) into
# web/testdata/axe, from the npm registry, with their licences, and records
# name, version, licence and npm integrity in web/static/vendor/VERSIONS.
# The page is then served by go:embed: no CDN, no build step at run time.
# Re-run after changing a version below; commit what it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
UPLOT=1.6.32
AXE=4.14.1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$UPLOT" "axe-core@$AXE" >/dev/null)
mkdir -p "$tmp/uplot" "$tmp/axe" web/static/vendor/uplot web/testdata/axe
tar -xzf "$tmp/uplot-$UPLOT.tgz" -C "$tmp/uplot"
tar -xzf "$tmp/axe-core-$AXE.tgz" -C "$tmp/axe"
cp "$tmp/uplot/package/dist/uPlot.iife.min.js" "$tmp/uplot/package/dist/uPlot.min.css" web/static/vendor/uplot/
cp "$tmp/uplot/package/LICENSE" web/static/vendor/uplot/LICENSE
cp "$tmp/axe/package/axe.min.js" "$tmp/axe/package/LICENSE" web/testdata/axe/
integrity() { npm view "$1" dist.integrity; }
licence() { node -e "console.log(require('$2/package/package.json').license)"; }
{
  echo "# name version licence npm-integrity (written by scripts/vendor-web.sh)"
  echo "uplot $UPLOT $(licence uplot "$tmp/uplot") $(integrity "uplot@$UPLOT") web/static/vendor/uplot"
  echo "axe-core $AXE $(licence axe "$tmp/axe") $(integrity "axe-core@$AXE") web/testdata/axe (tests only)"
} > web/static/vendor/VERSIONS
cat web/static/vendor/VERSIONS
