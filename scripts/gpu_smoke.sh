#!/usr/bin/env bash
# shellcheck disable=SC2329  # setup, pretrain_checked, ... are called through `step NAME FUNCTION`
# GPU smoke test on a single-GPU host (< 10 min): tiny InternEvo pre-training, XTuner LoRA fine-tuning,
# LMDeploy serving (turbomind and pytorch backends), OpenCompass evaluation of the endpoint and a
# Lagent agent run. One PASS/FAIL/SKIP line per step; every step's output goes to LOGDIR/<step>.log.
# See docs/gpu-smoke.md (online hosts, and offline hosts that only have an interpreter with torch).
#
#   scripts/gpu_smoke.sh LOGDIR [--python PY [--host-torch]] [--wheels DIR] [--steps a,b,...]
#                               [--endpoint-backend turbomind|pytorch] [--base-model tiny|DIR]
#
# --python PY       an existing interpreter: ichain's venv and the runtimes are built on its Python
# --host-torch      with --python: the runtimes use PY's torch (and its CUDA build) instead of installing
#                   the locks' torch (`ichain env sync --host-torch`)
# --wheels DIR      install everything from this folder of wheels, never from an index (offline hosts);
#                   a folder of bundles (from `ichain env wheels --split-mib`) is joined first
# --steps a,b       run only these steps (setup always runs, and syncs only the runtimes they need);
#                   a step whose prerequisite is not selected runs on what an earlier run left in LOGDIR
# --endpoint-backend  which LMDeploy backend serves the eval and agent steps (default turbomind); the
#                   other one is served afterwards for a chat
# --base-model M    fine-tune M instead of the model InternEvo pre-trains: a Hugging Face model folder,
#                   or `tiny` (a tiny random Llama written by workers/tiny_model.py in the xtuner runtime);
#                   the pre-training steps then SKIP (for hosts where the InternEvo runtime cannot be built)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
usage="usage: scripts/gpu_smoke.sh LOGDIR [--python PY [--host-torch]] [--wheels DIR] [--steps a,b,...] [--endpoint-backend turbomind|pytorch] [--base-model tiny|DIR]"
LOGDIR="${1:?$usage}"; shift
PY=""; WHEELS=""; HOST_TORCH=0; STEPS=""; MAIN=turbomind; BASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY="${2:?$usage}"; shift 2 ;;
    --host-torch) HOST_TORCH=1; shift ;;
    --wheels) WHEELS="$(cd "${2:?$usage}" && pwd)" || exit 2; shift 2 ;;
    --steps) STEPS="${2:?$usage}"; shift 2 ;;
    --endpoint-backend) MAIN="${2:?$usage}"; shift 2 ;;
    --base-model) BASE="${2:?$usage}"; shift 2 ;;
    *) echo "unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
  esac
done
case "$MAIN" in turbomind) OTHER=pytorch ;; pytorch) OTHER=turbomind ;;
  *) echo "--endpoint-backend must be turbomind or pytorch, not '$MAIN'" >&2; exit 2 ;; esac
if [ "$HOST_TORCH" = 1 ] && [ -z "$PY" ]; then echo "--host-torch needs --python PY" >&2; exit 2; fi
if [ -n "$BASE" ] && [ "$BASE" != tiny ]; then
  [ -f "$BASE/config.json" ] || { echo "--base-model $BASE: not a Hugging Face model folder (no config.json)" >&2; exit 2; }
  BASE="$(cd "$BASE" && pwd)"
fi

# step → the runtimes it uses, and the steps it needs (in this order).
ALL_STEPS=(data pretrain-validate pretrain-internevo pretrain-on-gpu base-model finetune-xtuner
           "serve-$MAIN" eval-endpoint agent-lagent "stop-$MAIN" "serve-$OTHER" "chat-$OTHER" "stop-$OTHER")
declare -A RUNTIMES=([data]=data [pretrain-validate]=internevo [pretrain-internevo]="internevo xtuner"
  [pretrain-on-gpu]="" [base-model]=xtuner [finetune-xtuner]=xtuner [serve-turbomind]=lmdeploy [serve-pytorch]=lmdeploy
  [stop-turbomind]=lmdeploy [stop-pytorch]=lmdeploy [chat-turbomind]=lmdeploy [chat-pytorch]=lmdeploy
  [eval-endpoint]=opencompass [agent-lagent]=agent)
declare -A NEEDS=([data]="" [pretrain-validate]=data [pretrain-internevo]=data
  [pretrain-on-gpu]=pretrain-internevo [base-model]="" [finetune-xtuner]="data pretrain-internevo"
  ["serve-$MAIN"]=finetune-xtuner [eval-endpoint]="serve-$MAIN" [agent-lagent]="serve-$MAIN"
  ["stop-$MAIN"]="serve-$MAIN" ["serve-$OTHER"]=finetune-xtuner ["chat-$OTHER"]="serve-$OTHER"
  ["stop-$OTHER"]="serve-$OTHER")
declare -A SELECTED=() STATUS=() SKIP_REASON=()
if [ -n "$BASE" ]; then  # fine-tune a given model: InternEvo is not part of this run
  NEEDS[finetune-xtuner]="data base-model"
  for s in pretrain-validate pretrain-internevo pretrain-on-gpu; do
    RUNTIMES[$s]=""; SKIP_REASON[$s]="--base-model $BASE: no pre-training in this run"
  done
  if [ "$BASE" != tiny ]; then
    NEEDS[finetune-xtuner]=data; RUNTIMES[base-model]=""; SKIP_REASON[base-model]="--base-model is a folder"
  fi
else
  RUNTIMES[base-model]=""; SKIP_REASON[base-model]="the base model is InternEvo's (no --base-model)"
fi
if [ -n "$STEPS" ]; then
  IFS=, read -r -a picked <<<"$STEPS"
  for s in "${picked[@]}"; do
    [ "$s" = setup ] && continue
    if [ -z "${RUNTIMES[$s]+x}" ] || [ -z "${NEEDS[$s]+x}" ]; then
      echo "unknown step '$s'; steps: setup ${ALL_STEPS[*]}" >&2; exit 2
    fi
    SELECTED[$s]=1
  done
else  # every step; base-model only when it has something to do
  for s in "${ALL_STEPS[@]}"; do [ "$s" = base-model ] && [ "$BASE" != tiny ] || SELECTED[$s]=1; done
fi
wanted_runtimes() {
  local s r; declare -A seen=()
  for s in "${ALL_STEPS[@]}"; do
    [ -n "${SELECTED[$s]:-}" ] || continue
    for r in ${RUNTIMES[$s]}; do seen[$r]=1; done
  done
  echo "${!seen[@]}"
}

mkdir -p "$LOGDIR"; LOGDIR="$(cd "$LOGDIR" && pwd)"
export ICHAIN_WORKDIR="$LOGDIR/work" ICHAIN_CACHE="${ICHAIN_CACHE:-$LOGDIR/cache}" HF_HUB_OFFLINE=1
if [ -n "$WHEELS" ]; then
  if ls "$WHEELS"/*/MANIFEST.json >/dev/null 2>&1 || [ -f "$WHEELS/MANIFEST.json" ]; then
    # bundles carried one call at a time: join them (sha256-checked) into one folder of wheels
    "${PY:-python3}" src/internlm_chain/runtimes/bundles.py join "$WHEELS" "$LOGDIR/wheels" || exit 2
    WHEELS="$LOGDIR/wheels"
  fi
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS" UV_NO_INDEX=1 UV_FIND_LINKS="$WHEELS" UV_OFFLINE=1
fi

failed=0
# step NAME COMMAND...: run it (when selected and its prerequisites did not fail), log it, print one line
step() {
  local name="$1"; shift
  [ -n "${SELECTED[$name]:-}" ] || [ "$name" = setup ] || return 0
  local need
  for need in ${NEEDS[$name]:-}; do
    case "${STATUS[$need]:-}" in
      FAIL|SKIP)
        printf 'SKIP %-22s   -   (needs %s, which %s)\n' "$name" "$need" \
          "$([ "${STATUS[$need]}" = FAIL ] && echo failed || echo was skipped)"
        STATUS[$name]=SKIP; return 0 ;;
    esac
  done
  if [ -n "${SKIP_REASON[$name]:-}" ]; then
    printf 'SKIP %-22s   -   (%s)\n' "$name" "${SKIP_REASON[$name]}"
    STATUS[$name]=SKIP; return 0
  fi
  local t0; t0=$(date +%s)
  if "$@" >"$LOGDIR/$name.log" 2>&1; then
    printf 'PASS %-22s %4ss\n' "$name" "$(( $(date +%s) - t0 ))"
    STATUS[$name]=PASS
  else
    printf 'FAIL %-22s %4ss  (log: %s)\n' "$name" "$(( $(date +%s) - t0 ))" "$LOGDIR/$name.log"
    STATUS[$name]=FAIL
    failed=$((failed + 1))
  fi
}

BROKEN=()  # runtimes that did not sync
setup() {
  export ICHAIN_VENV="$LOGDIR/venv"
  # ichain's own venv on PY's Python; its packages come from the index or the wheel folder (not PY's)
  if [ -n "$PY" ] && [ ! -x "$ICHAIN_VENV/bin/python" ]; then "$PY" -m venv "$ICHAIN_VENV" || return 1; fi
  # shellcheck source=scripts/_venv.sh
  . scripts/_venv.sh || return 1
  set +e  # _venv.sh turns errexit on; the steps handle failures themselves
  nvidia-smi -L
  local rts; rts="$(wanted_runtimes)"
  [ -n "$rts" ] || { echo "no runtime needed by the selected steps"; return 0; }
  local sync=(ichain env sync --variant cuda)
  [ -n "$PY" ] && sync+=(--python "$PY")
  [ "$HOST_TORCH" = 1 ] && sync+=(--host-torch)
  # one runtime at a time: a runtime that cannot be installed takes out only the steps that use it
  local r
  for r in $rts; do
    if "${sync[@]}" "$r"; then echo "runtime $r: ok"; else echo "runtime $r: FAILED"; BROKEN+=("$r"); fi
  done
  ichain env list
  [ "${#BROKEN[@]}" -eq 0 ]
}
step setup setup
set +e
if [ "${STATUS[setup]}" = FAIL ]; then
  for s in "${ALL_STEPS[@]}"; do
    if [ "${#BROKEN[@]}" -eq 0 ]; then  # ichain itself could not be set up: nothing can run
      SKIP_REASON[$s]="needs setup, which failed"
    fi
    for r in ${RUNTIMES[$s]}; do
      for b in "${BROKEN[@]}"; do
        [ "$r" = "$b" ] && SKIP_REASON[$s]="runtime $b did not sync, see $LOGDIR/setup.log"
      done
    done
  done
fi
export PATH="$LOGDIR/venv/bin:$PATH"
if [ "$HOST_TORCH" = 1 ] && [ -z "${SKIP_REASON[serve-turbomind]:-}" ]; then
  # turbomind links CUDA 12 libraries (nvidia-*-cu12); a host-torch runtime takes CUDA from the host's torch
  cuda="$(ichain env list --json 2>/dev/null | python -c 'import json,sys
print(next((r.get("host_cuda") or "" for r in json.load(sys.stdin)["runtimes"] if r["runtime"] == "lmdeploy"), ""))' 2>/dev/null)"
  if [ -n "$cuda" ] && [ "${cuda%%.*}" != 12 ]; then
    SKIP_REASON[serve-turbomind]="turbomind needs CUDA 12 libraries; this host-torch runtime has the host's CUDA $cuda (docs/gpu-smoke.md)"
  fi
fi

CHAIN="$LOGDIR/gpu-smoke.yaml"
edits=(-e 's/^device: .*/device: cuda/' -e "s/^    backend: auto\b.*/    backend: $MAIN\n    cache_max_entry_count: 0.2/")
if [ -n "$BASE" ]; then  # no pre-training, no base-vs-fine-tuned eval (it compares with InternEvo's model)
  model="$BASE"; [ "$BASE" = tiny ] && model="$LOGDIR/base-model"
  edits+=(-e 's/^  pretrain:$/  pretrain:\n    enabled: false/' -e '/^  eval:$/,/^  deploy:$/{/^  deploy:$/!d}'
          -e "s|^    model: \${stages.pretrain.outputs.model}\$|    model: $model|")
fi
sed "${edits[@]}" configs/quickstart.yaml > "$CHAIN"
grep -q "^    backend: $MAIN\$" "$CHAIN" || { echo "could not set the deploy backend in $CHAIN" >&2; exit 2; }
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
step base-model         "$ICHAIN_CACHE/envs/xtuner/bin/python" src/internlm_chain/workers/tiny_model.py "$LOGDIR/base-model"
step finetune-xtuner    ichain run "$CHAIN" --only finetune
step "serve-$MAIN"      ichain run "$CHAIN" --only deploy
endpoint() { python - "$ICHAIN_WORKDIR/manifest.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["stages"]
print(s["deploy"]["outputs"]["endpoint"]["path"], s["deploy"]["outputs"]["endpoint"]["served_name"],
      s["finetune"]["outputs"]["model"]["path"])
PY
}
read -r URL SERVED MODEL < <(endpoint 2>/dev/null || echo "- - -")
step eval-endpoint      ichain eval --endpoint "$URL" --served-name "$SERVED" --tokenizer "$MODEL" \
                          --custom "$LOGDIR/data/quickstart-quiz.jsonl" --max-out-len 16 -o "$LOGDIR/endpoint-eval"
step agent-lagent       ichain run "$CHAIN" --only agent
step "stop-$MAIN"       ichain deploy stop -c "$CHAIN"
step "serve-$OTHER"     ichain run "$CHAIN" --only deploy --set "stages.deploy.backend=$OTHER"
step "chat-$OTHER"      ichain deploy chat -c "$CHAIN" --message "Hello"
step "stop-$OTHER"      ichain deploy stop -c "$CHAIN"
echo "$failed step(s) failed; logs in $LOGDIR"
exit $(( failed > 0 ))
