#!/bin/sh
# Make sure the side-by-side benchmark's peers are installed:
#   * nginx with the nchan module (Debian packages nginx + libnginx-mod-nchan),
#   * sse-starlette on uvicorn (the `bench` extra) in the project's virtualenv.
#
# Usage: bench/ensure-peers.sh [path/to/venv/python]
# The apt step needs root (or sudo). The packaged nginx service is stopped and
# disabled again right after installation: the benchmark starts its own nginx
# from a private configuration and needs nothing listening on port 80.
set -eu

PYTHON=${1:-.venv/bin/python}
NCHAN_GLOB="/usr/lib/nginx/modules/ngx_nchan_module.so /usr/share/nginx/modules/ngx_nchan_module.so"

have_nchan() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || return 1
    for module in $NCHAN_GLOB; do
        [ -f "$module" ] && return 0
    done
    return 1
}

if ! have_nchan; then
    if [ "$(id -u)" = 0 ]; then
        SUDO=
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "nginx + libnginx-mod-nchan are missing and this user cannot install them;" >&2
        echo "run as root: apt-get install nginx libnginx-mod-nchan" >&2
        exit 1
    fi
    echo "installing nginx + libnginx-mod-nchan (apt)" >&2
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq nginx libnginx-mod-nchan >/dev/null
    # The package starts a system nginx on :80 where an init system exists; the
    # benchmark does not use it.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
    elif [ -f /run/nginx.pid ]; then
        $SUDO /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
    fi
    have_nchan || { echo "nchan module not found after install" >&2; exit 1; }
fi

if ! "$PYTHON" -c "import sse_starlette, uvicorn, starlette" >/dev/null 2>&1; then
    echo "installing the bench extra (sse-starlette, uvicorn, starlette)" >&2
    "$PYTHON" -m pip install --quiet -e '.[bench]'
fi
