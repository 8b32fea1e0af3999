#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): set up, then run benchmarks/gpu_check.py's steps on CUDA in bf16
# and write ONE JSON of figures. <= 8 minutes on one H100/H200; needs no network beyond pip wheels.
#
#   bash benchmarks/gpu_check.sh [--out FILE] [--cpu] [--dry-run] [--only step1,step2] [--timeout-scale F] [--budget-s S]
#
# Figures go to FILE, else $OUT/gpu_check.json, else ./gpu_check.json. --cpu runs the steps that can
# run on a CPU (how this script is checked without a GPU); --dry-run only writes the plan. Each install
# and each step is time-boxed and may fail: the failure is recorded and the check goes on.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PY="${PYTHON:-python3}"
TOTAL_S=480          # the whole check, installs included
INSTALL_S=150        # pip, at most (skipped when everything imports already)
START=$(date +%s)
MODE=cuda
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu; ARGS+=("--cpu") ;;
    --dry-run) MODE=dry-run; ARGS+=("--dry-run") ;;
    --out|--only|--timeout-scale|--budget-s) ARGS+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "gpu_check.sh: $*" >&2; }
NOTES="$(mktemp)"
note() { echo "$*" >> "$NOTES"; log "$*"; }

# ---- set-up: what the steps import ----------------------------------------------------------------
if [ "$MODE" = cuda ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    note "torch with CUDA not importable: installing the default torch wheel"
    timeout "$INSTALL_S" "$PY" -m pip install -q --only-binary=:all: "torch>=2.4,<=2.14.1" || note "torch install failed or timed out"
  fi
  if ! "$PY" -c "import transformers, datasets, safetensors, tokenizers, PIL, yaml, jinja2, tqdm, rapidfuzz, scipy, sklearn, filelock, pycocotools" 2>/dev/null; then
    note "installing vlmbench's dependencies from wheels"
    left=$(( INSTALL_S - ($(date +%s) - START) )); [ "$left" -lt 20 ] && left=20
    timeout "$left" "$PY" -m pip install -q --only-binary=:all: \
      "transformers>=4.50" "safetensors>=0.4" "tokenizers>=0.19" numpy pillow pyyaml "datasets>=2.18" \
      pycocotools jinja2 tqdm rapidfuzz scipy scikit-learn filelock httpx fastapi uvicorn || note "dependency install failed or timed out"
  fi
  if ! "$PY" -c "import flash_attn" 2>/dev/null; then
    # flash-attn publishes few wheels on PyPI; a source build would blow the time box, so wheels only.
    left=$(( INSTALL_S - ($(date +%s) - START) )); [ "$left" -lt 15 ] && left=15
    timeout "$left" "$PY" -m pip install -q --only-binary=:all: flash-attn \
      || note "flash-attn: no wheel installed (its steps will record skipped/error)"
  fi
fi
# vlmbench itself is read from this checkout (PYTHONPATH), so nothing is built or installed for it.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

left=$(( TOTAL_S - ($(date +%s) - START) - 10 ))
[ "$left" -lt 60 ] && left=60
# a --budget-s given on the command line comes later in ARGS and wins
"$PY" benchmarks/gpu_check.py --budget-s "$left" "${ARGS[@]}"
rc=$?

# The set-up notes go into the same JSON (one file of figures).
OUTFILE=""
for ((i = 0; i < ${#ARGS[@]}; i++)); do [ "${ARGS[$i]}" = "--out" ] && OUTFILE="${ARGS[$((i + 1))]}"; done
[ -z "$OUTFILE" ] && { [ -n "${OUT:-}" ] && OUTFILE="$OUT/gpu_check.json" || OUTFILE="gpu_check.json"; }
if [ -f "$OUTFILE" ]; then
  "$PY" - "$OUTFILE" "$NOTES" "$(( $(date +%s) - START ))" <<'PYEOF'
import json, sys
path, notes, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = json.load(open(path))
report["setup_notes"] = [line.strip() for line in open(notes) if line.strip()]
report["total_s"] = seconds
json.dump(report, open(path, "w"), indent=2)
PYEOF
fi
rm -f "$NOTES"
log "done in $(( $(date +%s) - START )) s (exit $rc)"
exit $rc
