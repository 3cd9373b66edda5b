#!/usr/bin/env bash
# Install logfwd and run it on the shipped default config (conf/logfwd.yaml). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
exec .venv/bin/logfwd -c conf/logfwd.yaml "$@"
