#!/usr/bin/env bash
# Installs everything Vigil's tests need, then runs them all:
#   kcat (Debian)             - the alert test reads the alerts topic with it
#   chromium (Debian)         - the status page is tested in headless Chromium
#   mosquitto, mosquitto-clients (Debian) - the MQTT listener and bridge tests
#   prometheus-alertmanager (Debian)      - the alert delivery test
#   golangci-lint (go install) - lint, with .golangci.yml
#   MinIO server (go install)  - built once (about six minutes) and cached
# Binaries built with go install are cached under ~/.cache/vigil/bin (or
# $VIGIL_CACHE/bin), outside the clone, and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${VIGIL_CACHE:-$HOME/.cache/vigil}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
export PATH="$BIN:$PATH"

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]} from Debian"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

GOLANGCI_VERSION=v2.15.0
if ! golangci-lint version 2>/dev/null | grep -q "${GOLANGCI_VERSION#v}"; then
  echo "== building golangci-lint $GOLANGCI_VERSION (cached in $BIN)"
  GOBIN="$BIN" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_VERSION"
fi

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
if [ "$(cat "$BIN/minio.version" 2>/dev/null)" != "$MINIO_VERSION" ] || [ ! -x "$BIN/minio" ]; then
  echo "== building the MinIO server $MINIO_VERSION (about six minutes, once; cached in $BIN)"
  GOBIN="$BIN" go install "github.com/minio/minio@$MINIO_VERSION"
  echo "$MINIO_VERSION" > "$BIN/minio.version"
fi
export VIGIL_MINIO_BIN="$BIN/minio"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== golangci-lint"
golangci-lint run ./...
# Fuzz budgets are execution counts, not durations: Go 1.26's fuzz coordinator
# can fail a target with a bare "context deadline exceeded" when -fuzztime
# expires while a worker is mid-call (go.dev/issue/75804, fixed in Go 1.27).
# A count has no deadline to race; each is about 10 s on a CI machine.
echo "== fuzz the ingest decoder, the model reader, the record decoders and their number fast paths, the snapshot frames"
go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 30000x ./ingest/
go test -run '^$' -fuzz '^FuzzScanBody$' -fuzztime 30000x ./ingest/
go test -run '^$' -fuzz '^FuzzReadForest$' -fuzztime 10000x ./ml/
go test -run '^$' -fuzz '^FuzzDecodeEnriched$' -fuzztime 60000x ./contract/
go test -run '^$' -fuzz '^FuzzEnrichedScanner$' -fuzztime 80000x ./contract/
go test -run '^$' -fuzz '^FuzzEnrichedDecodeKey$' -fuzztime 60000x ./contract/
go test -run '^$' -fuzz '^FuzzRawScanner$' -fuzztime 120000x ./contract/
go test -run '^$' -fuzz '^FuzzNumbers$' -fuzztime 120000x ./contract/
go test -run '^$' -fuzz '^FuzzSnapshotFrame$' -fuzztime 60000x ./pipeline/
echo "== the timed hostile-device suite, alone and without -race (its attackers run in the test binary)"
go test -count=1 -timeout 5m -run '^TestHostileDevices$' .
echo "== go test -race (every test, goleak on)"
go test -race -count=1 -timeout 25m ./...
