#!/usr/bin/env bash
# GPU smoke test on a single-GPU host (< 10 min): tiny InternEvo pre-training, XTuner LoRA fine-tuning,
# LMDeploy serving (turbomind and pytorch backends), OpenCompass evaluation of the endpoint and a
# Lagent agent run. One PASS/FAIL line per step; every step's output goes to LOGDIR/<step>.log.
#
#   scripts/gpu_smoke.sh LOGDIR [--python PY] [--wheels DIR]
#
# --python PY   an existing interpreter that already has torch: the runtimes are built on it
# --wheels DIR  install everything from this folder of wheels, never from an index (offline hosts)
set -uo pipefail
cd "$(dirname "$0")/.."
LOGDIR="${1:?usage: scripts/gpu_smoke.sh LOGDIR [--python PY] [--wheels DIR]}"; shift
PY=""; WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY="$2"; shift 2 ;;
    --wheels) WHEELS="$(cd "$2" && pwd)"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$LOGDIR"; LOGDIR="$(cd "$LOGDIR" && pwd)"
export ICHAIN_WORKDIR="$LOGDIR/work" ICHAIN_CACHE="${ICHAIN_CACHE:-$LOGDIR/cache}" HF_HUB_OFFLINE=1
if [ -n "$WHEELS" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS" UV_NO_INDEX=1 UV_FIND_LINKS="$WHEELS"
fi
failed=0
step() {  # step NAME COMMAND...: run, log, print PASS/FAIL with the time taken
  local name="$1"; shift
  local t0; t0=$(date +%s)
  if "$@" >"$LOGDIR/$name.log" 2>&1; then
    printf 'PASS %-22s %4ss\n' "$name" "$(( $(date +%s) - t0 ))"
  else
    printf 'FAIL %-22s %4ss  (log: %s)\n' "$name" "$(( $(date +%s) - t0 ))" "$LOGDIR/$name.log"
    failed=$((failed + 1))
  fi
}

setup() {
  export ICHAIN_VENV="$LOGDIR/venv"
  if [ -n "$PY" ]; then "$PY" -m venv --system-site-packages "$ICHAIN_VENV"; fi
  . scripts/_venv.sh
  nvidia-smi -L
  local sync=(ichain env sync --variant cuda data internevo xtuner opencompass lmdeploy agent)
  [ -n "$PY" ] && sync+=(--python "$PY")
  "${sync[@]}"
}
step setup setup
export PATH="$LOGDIR/venv/bin:$PATH"
CHAIN="$LOGDIR/gpu-smoke.yaml"
sed -e 's/^device: .*/device: cuda/' -e 's/^  deploy:/  deploy:\n    backend: turbomind\n    cache_max_entry_count: 0.2/' \
  configs/quickstart.yaml > "$CHAIN"
cp -r configs/data "$LOGDIR/data"

step data              ichain run "$CHAIN" --only data
step pretrain-validate  ichain pretrain -c "$CHAIN" --validate
step pretrain-internevo ichain run "$CHAIN" --only pretrain
pretrain_checked() { python - "$ICHAIN_WORKDIR" <<'PY'
import json, pathlib, sys
p = pathlib.Path(sys.argv[1]) / "pretrain"
v = json.loads((p / "hf_verify.json").read_text())
assert v["ok"] and v["max_abs_diff"] < 1e-4, v
assert "smoke mode" not in (p / "logs" / "train.log").read_text(), "training fell back to CPU smoke mode"
print("hf max|diff|", v["max_abs_diff"], "vs trained", v.get("trained_max_abs_diff"))
PY
}
step pretrain-on-gpu    pretrain_checked
step finetune-xtuner   ichain run "$CHAIN" --only finetune
step serve-turbomind   ichain run "$CHAIN" --only deploy
endpoint() { python - "$ICHAIN_WORKDIR/manifest.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["stages"]
print(s["deploy"]["outputs"]["endpoint"]["path"], s["deploy"]["outputs"]["endpoint"]["served_name"],
      s["finetune"]["outputs"]["model"]["path"])
PY
}
read -r URL SERVED MODEL < <(endpoint 2>/dev/null || echo "- - -")
step eval-endpoint     ichain eval --endpoint "$URL" --served-name "$SERVED" --tokenizer "$MODEL" \
                         --custom "$LOGDIR/data/quickstart-quiz.jsonl" --max-out-len 16 -o "$LOGDIR/endpoint-eval"
step agent-lagent      ichain run "$CHAIN" --only agent
step stop-turbomind    ichain deploy stop -c "$CHAIN"
step serve-pytorch     ichain run "$CHAIN" --only deploy --set stages.deploy.backend=pytorch
step chat-pytorch      ichain deploy chat -c "$CHAIN" --message "Hello"
step stop-pytorch      ichain deploy stop -c "$CHAIN"
echo "$failed step(s) failed; logs in $LOGDIR"
exit $(( failed > 0 ))
