#!/usr/bin/env bash
# The main job: the quickstart chain, for real, on this machine's CPU with a tiny model.
#   install → sync the stage runtimes the chain needs → data → pretrain → finetune → eval (base vs
#   fine-tuned) → deploy (CPU stand-in) → agent → evaluate the endpoint → stop the server → summary.
# A second run is a no-op that says so. Environment: ICHAIN_WORKDIR (default runs/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
start=$(date +%s)
CHAIN=configs/quickstart.yaml
export ICHAIN_WORKDIR="${ICHAIN_WORKDIR:-$PWD/runs/quickstart}"

ichain config validate "$CHAIN"
ichain env sync -c "$CHAIN"
ichain run "$CHAIN" --quiet

# eval runs before deploy in a chain, so the served endpoint is evaluated in a second pass
read -r url served model < <(python - "$ICHAIN_WORKDIR/manifest.json" <<'PY'
import json, sys
stages = json.load(open(sys.argv[1]))["stages"]
endpoint = stages["deploy"]["outputs"]["endpoint"]
print(endpoint["path"], endpoint["served_name"], stages["finetune"]["outputs"]["model"]["path"])
PY
)
ichain eval --endpoint "$url" --served-name "$served" --tokenizer "$model" \
  --custom configs/data/quickstart-quiz.jsonl --max-out-len 16 -o "$ICHAIN_WORKDIR/endpoint-eval"
ichain deploy stop -c "$CHAIN"

ichain status "$CHAIN"
echo "manifest: $ICHAIN_WORKDIR/manifest.json"
echo "endpoint eval: $ICHAIN_WORKDIR/endpoint-eval"
echo "quickstart finished in $(( $(date +%s) - start )) s; workdir uses $(du -sh "$ICHAIN_WORKDIR" | cut -f1)"
