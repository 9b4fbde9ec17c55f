#!/usr/bin/env bash
# Installs what the test suite drives a node with, when it is missing:
# libmemcached's conformance tester, openssl and SASL's PLAIN module (for
# the TLS and authentication tests), headless Chromium and Python's
# Prometheus text parser (for the HTTP port's tests), and the clients of
# tests/clients.rs — pylibmc and pymemcache (Debian's python3 packages, for
# /usr/bin/python3), PHP's memcached extension, Perl's
# Cache::Memcached::Fast, and the Node.js clients memcached and memjs (npm,
# pinned in node/package-lock.json), memcached itself (the yardstick the
# meta protocol's replies are compared with) and the meta-protocol client
# meta-memcache (PyPI, pinned, in tests/clients/.venv). Safe to run again:
# it installs only what is not there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v memccapable >/dev/null || missing+=(libmemcached-tools)
command -v memcached >/dev/null || missing+=(memcached)
/usr/bin/python3 -c 'import pylibmc' 2>/dev/null || missing+=(python3-pylibmc)
/usr/bin/python3 -c 'import pymemcache' 2>/dev/null || missing+=(python3-pymemcache)
{ command -v php >/dev/null && php -r 'exit(class_exists("Memcached") ? 0 : 1);'; } || missing+=(php-cli php-memcached)
perl -MCache::Memcached::Fast -e 1 2>/dev/null || missing+=(libcache-memcached-fast-perl)
command -v node >/dev/null || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
# TLS and SASL: openssl's s_client (raw lines over TLS), the headers the
# Rust memcache client's TLS builds against, and Cyrus SASL's PLAIN
# mechanism for libmemcached (pylibmc) to authenticate with.
command -v openssl >/dev/null || missing+=(openssl)
{ command -v pkg-config >/dev/null && pkg-config --exists openssl; } || missing+=(pkg-config libssl-dev)
ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || missing+=(libsasl2-modules)
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || missing+=(python3-prometheus-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$here/.venv/bin/python" -c 'import meta_memcache' 2>/dev/null; then
  echo "installing the meta-protocol client"
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --disable-pip-version-check meta-memcache==4.3.0
fi

if [ ! -d "$here/node/node_modules/memjs" ] || [ ! -d "$here/node/node_modules/memcached" ]; then
  echo "installing the Node.js clients"
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
