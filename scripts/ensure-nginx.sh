#!/bin/sh
# Install Debian's nginx when /usr/sbin/nginx is missing (the deploy tests run
# the real binary). Idempotent: does nothing when it is already installed. The
# packaged service is stopped so it does not hold port 80.
set -eu

if [ -x /usr/sbin/nginx ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
else
    SUDO="sudo"
fi

$SUDO apt-get -o DPkg::Lock::Timeout=300 update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends nginx
if command -v service >/dev/null 2>&1; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
fi
