#!/usr/bin/env bash
# Every GPU benchmark in sequence on one H100, sized to finish within about 8 minutes (about 7 on an
# H100 80GB; the first run also builds the random-weight 7B and 3B reference models in /tmp).
# JSON files go to ${OUT:-/tmp}/bench/, logs beside them, and one combined table to stdout.
#
#   bash benchmarks/run_gpu.sh            # from the repository root, with the carried wheels in .whl/
#
# The GPU image has no PyAV/decord: clips are written and decoded with OpenCV. A benchmark that
# fails or overruns its time box is reported and the next one still runs.
# ONLY="eval eval_static" runs just those (names as in the `bench` lines below).
set -u
cd "$(dirname "$0")/.."
source benchmarks/gpu_setup.sh || { echo "gpu_setup.sh failed"; exit 1; }
DIR="${OUT:-/tmp}/bench"
mkdir -p "$DIR"
STAMP=$(date +%F)
FAILED=()

bench() {  # bench NAME SECONDS script args...
  local name=$1 limit=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local t0=$SECONDS
  echo "=== $name (time box ${limit}s)"
  if timeout "$limit" python3 "$@" --out "$DIR/${STAMP}_${name}.json" > "$DIR/$name.log" 2>&1; then
    grep -v '^{' "$DIR/$name.log" | grep -E '^(\||device|shared|likelihood|batched|[0-9.]+ TFLOP)' || true
  else
    FAILED+=("$name")
    echo "!!! $name failed or ran out of time; last lines of $DIR/$name.log:"
    tail -5 "$DIR/$name.log"
  fi
  echo "--- $name: $((SECONDS - t0)) s"
}

python3 - <<'PY'  # build both reference models first (skipped when already in /tmp)
import sys
sys.path.insert(0, "benchmarks")
import _common as C
for arch in ("7b", "3b"):
    print(arch, C.model_folder(arch, None, False), flush=True)
PY

bench vision      60 benchmarks/bench_vision.py --arch 7b --frames 16 --side 448 --reps 5
bench rollout    150 benchmarks/bench_rollout.py --arch 7b --frames 16 --side 448 --group 8 --new-tokens 256 --reps 2 \
                     --paths stock,shared,shared+graph
bench select     100 benchmarks/bench_select.py --arch 7b --n 8 --frames 16 --side 448 --batch-size 4 \
                     --k 8 --sampling-n 4 --max-new-tokens 128 --backend opencv
bench eval        50 benchmarks/bench_eval.py --arch 7b --n 16 --batch-size 8 --frames 16 --side 448 --backend opencv
bench eval_static 110 benchmarks/bench_eval.py --arch 7b --n 16 --batch-size 8 --frames 16 --side 448 --backend opencv \
                     --static-cache
bench eval_reason 150 benchmarks/bench_eval.py --arch 7b --n 16 --batch-size 8 --frames 16 --side 448 --backend opencv \
                     --fmt reasoning --max-new-tokens 256
bench eval_reason_static 150 benchmarks/bench_eval.py --arch 7b --n 16 --batch-size 8 --frames 16 --side 448 \
                     --backend opencv --fmt reasoning --max-new-tokens 256 --static-cache
bench train_step 170 benchmarks/bench_train_step.py --lora-arch 7b --full-arch 3b --prompts 1 --group 8 \
                     --micro-batch 2 --new-tokens 64 --frames 16 --side 448 --warmup 1 --steps 2 --backend opencv

echo
echo "=== summary ($DIR)"
python3 benchmarks/summary.py "$DIR"
# the device returns at most 8 files: the logs travel as one archive beside the JSON files
tar czf "$DIR/logs.tgz" -C "$DIR" $(cd "$DIR" && ls *.log) && rm -f "$DIR"/*.log
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "failed: ${FAILED[*]}"
  exit 1
fi
