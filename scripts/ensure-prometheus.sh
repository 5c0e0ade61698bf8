#!/usr/bin/env bash
# Install Debian's prometheus package (prometheus + promtool) when missing; the
# deploy tests run `promtool check rules` and a real Prometheus server.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: installing prometheus"
  apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq prometheus >/dev/null
else
  echo "ensure-prometheus: prometheus/promtool missing (install the prometheus package)" >&2
  exit 1
fi
