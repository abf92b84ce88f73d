#!/usr/bin/env bash
# The main job: install, sync the runtimes the quickstart chain needs, run the chain on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

ichain config validate configs/quickstart.yaml
ichain run configs/quickstart.yaml --dry-run
