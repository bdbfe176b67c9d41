#!/usr/bin/env bash
# The decode-step study on one H200 in one short call (about 5 minutes on a fresh machine, plus its start): the
# decode step's attention and projections in isolation (bench_decode_kernels.py), then the 7B
# rollout at G = 8 x 256 tokens through ego3s's CUDA-graph loop with the inductor-compiled step
# (with a profile of the decode step) and with the eager step, in the time left before END seconds
# (default 300). Each part has its own time box; JSON, profiler tables and logs go to
# ${OUT:-/tmp}/decode/ (tables and logs as one archive).
#
#   bash benchmarks/run_decode_gpu.sh          # from the repository root, with the carried wheels in .whl/
#   EVAL=1 bash benchmarks/run_decode_gpu.sh   # also direct-answer evaluation, one at a time vs batches of 8
#   STATIC=1 ...                               # also transformers' compiled static path
set -u
cd "$(dirname "$0")/.."
END=${END:-300}
source benchmarks/gpu_setup.sh || { echo "gpu_setup.sh failed"; exit 1; }
DIR="${OUT:-/tmp}/decode"
mkdir -p "$DIR/tables"
STAMP=$(date +%F)
box() {  # box NAME SECONDS command...   (SECONDS capped by the time left before END)
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  [ $((END - SECONDS)) -lt "$limit" ] && limit=$((END - SECONDS))
  [ "$limit" -le 5 ] && { echo "!!! $name skipped: no time left"; return; }
  echo "=== $name (time box ${limit}s)"
  timeout "$limit" "$@" > "$DIR/tables/$name.log" 2>&1 || echo "!!! $name failed or ran out of time"
  grep -v '^{' "$DIR/tables/$name.log" | grep -E '^(\||device|floor|shared|eager|batched|split|!!!|Traceback|[A-Za-z]*Error)' | head -30
  echo "--- $name: $((SECONDS - t0)) s"
}
ARGS="--arch 7b --frames 16 --side 448 --group 8 --new-tokens 256 --reps 2"
box build 80 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import _common as C; print(C.model_folder('7b', None, False))"
box kernels 45 python3 benchmarks/bench_decode_kernels.py --out "$DIR/${STAMP}_h200_decode_kernels.json"
box rollout_compiled 130 python3 benchmarks/bench_rollout.py $ARGS --paths shared+graph-compiled --profile "$DIR/tables" \
    --out "$DIR/${STAMP}_h200_rollout_graph_compiled.json"
box rollout 60 python3 benchmarks/bench_rollout.py $ARGS --paths shared+graph \
    --out "$DIR/${STAMP}_h200_rollout_graph.json"
if [ -n "${STATIC:-}" ]; then  # transformers' compiled static path, for comparison
  box rollout_static 90 python3 benchmarks/bench_rollout.py $ARGS --paths shared+static \
      --out "$DIR/${STAMP}_h200_rollout_static.json"
fi
if [ -n "${EVAL:-}" ]; then
  box eval 100 python3 benchmarks/bench_eval.py --arch 7b --n 16 --batch-size 8 --frames 16 --side 448 \
      --backend opencv --static-cache --out "$DIR/${STAMP}_h200_eval_graph_direct.json"
fi
tar czf "$DIR/${STAMP}_h200_decode_logs.tgz" -C "$DIR" tables && rm -rf "$DIR/tables"
ls -la "$DIR"
