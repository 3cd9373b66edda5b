#!/usr/bin/env bash
# Install logfwd (once; again only when its build inputs change) and run it. With no
# arguments it runs the shipped default config, conf/logfwd.yaml: records flow to stdout
# (Ctrl-C stops). Arguments go to logfwd as they are: ./run.sh -c my.conf, ./run.sh --list-plugins.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
(($#)) || set -- -c conf/logfwd.yaml
exec .venv/bin/logfwd "$@"
