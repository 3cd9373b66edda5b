#!/usr/bin/env bash
# Install everything the tests need (clients, real backends) and run the whole suite.
# The backends themselves (Kafka broker, InfluxDB, ES stand-in, journald, rsyslog) are
# started and stopped by pytest fixtures on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh --test
.venv/bin/ruff check logfwd tests bench examples
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
