#!/usr/bin/env bash
# Install what the browser tests (tests/browser/) need, when it is missing:
# Debian's chromium at /usr/bin/chromium and the npm package playwright-core
# (which drives that chromium; no browser of its own is downloaded).
set -euo pipefail

cd "$(dirname "$0")/.."
BROWSER_DIR=tests/browser

apt_install() {  # package...
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get -o DPkg::Lock::Timeout=300 update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
  else
    echo "ensure-browser: install the Debian package(s) $*" >&2
    exit 1
  fi
}

[ -x /usr/bin/chromium ] || apt_install chromium
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v npm >/dev/null 2>&1 || apt_install npm

stamp="$BROWSER_DIR/node_modules/.installed-stamp"
if [ ! -f "$stamp" ] || [ "$BROWSER_DIR/package-lock.json" -nt "$stamp" ]; then
  echo "ensure-browser: installing playwright-core"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  (cd "$BROWSER_DIR" && if [ -f package-lock.json ]; then
     npm ci --no-audit --no-fund --loglevel=error
   else
     npm install --no-audit --no-fund --loglevel=error
   fi)
  touch "$stamp"
fi
