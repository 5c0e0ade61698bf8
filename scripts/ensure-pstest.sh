#!/usr/bin/env bash
# Build pstest, Google's fake Pub/Sub server, for the gcppubsub:// driver tests:
# tests/brokers/pstest/main.go against Debian's golang-google-cloud-dev, offline
# (GOPATH mode, no module proxy). Installs the Debian packages when missing and
# rebuilds only when the binary is missing or older than its sources.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/tests/brokers/pstest"
out="${PSTEST_BIN:-$root/.cache/pstest/pstest}"
gocode=/usr/share/gocode
fake="$gocode/src/cloud.google.com/go/pubsub/pstest/fake.go"

if ! command -v go >/dev/null 2>&1 || [ ! -f "$fake" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-pstest: installing golang-go golang-google-cloud-dev"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-google-cloud-dev >/dev/null
  else
    echo "ensure-pstest: install the golang-go and golang-google-cloud-dev packages" >&2
    exit 1
  fi
fi

if [ -x "$out" ] && [ "$out" -nt "$src/main.go" ] && [ "$out" -nt "$fake" ] \
  && [ "$out" -nt "$0" ]; then
  exit 0
fi
echo "ensure-pstest: building $out"
mkdir -p "$(dirname "$out")"
cd "$src"
GO111MODULE=off GOPROXY=off GOFLAGS= \
  GOPATH="$root/.cache/pstest/gopath:$gocode" \
  GOCACHE="${GOCACHE:-$root/.cache/pstest/go-build}" \
  go build -o "$out.tmp" .
mv "$out.tmp" "$out"
