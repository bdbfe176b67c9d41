#!/usr/bin/env bash
# The EgoSynth study's table on the GPU image, one time-boxed call at a time (docs/egosynth_study.md).
# From the repo root:
#   bash experiments/egosynth/table_gpu.sh [ROWS] [SECONDS]
# ROWS: comma-separated rows (default: all, in table.yaml's order); SECONDS: this call's time box
# (default 570, under the device's 600 s per command). Rerun it until run.log says "rows to run: none":
# finished rows are skipped, a killed stage resumes. Needs .whl/ (benchmarks/gpu_wheels.sh) and the
# smol GGUF split in .gguf/a and .gguf/b, carried in two calls in a row (each ~48 MB of the 64 MiB
# carry): first `carry: [.gguf/a]` (it only stages the half and exits), then `carry: [.whl, .gguf/b]`.
# The second call is close to the 64 MiB limit (13 MB of tree + 49.2 MB + 3.5 MB of .whl): if the device
# refuses it, split the GGUF in three (`split -n 3`, parts in .gguf/a, .gguf/b, .gguf/c) and stage
# one more staging call first; the staging takes any number of parts.
# Restores an earlier session's results from $RESTORE (default experiments/egosynth/results/table_pack.tgz)
# and packs the small results into $OUT/egosynth_table.tgz. CONFIG=path runs another table config;
# SELECT_ONLY=csm prepares the base model and runs only that selection (run.py --select-only).
set -uo pipefail
rows=${1:-}
limit=${2:-570}
# The GGUF travels in two halves, one per call; a path not carried is removed from the device's
# checkout, so each half is staged in /tmp, which lasts while the machine stays warm (30 s idle).
gguf=/tmp/smol.gguf
stage=/tmp/ego3s_gguf
if [ ! -s "$gguf" ]; then
  mkdir -p "$stage"
  for part in .gguf/*/gguf_part_*; do [ -f "$part" ] && cp -n "$part" "$stage/"; done
  cat $(ls "$stage"/gguf_part_* 2>/dev/null | sort) > "$gguf.tmp" 2>/dev/null
  size=$(stat -c %s "$gguf.tmp")
  if [ "$size" != 98362432 ]; then  # SmolLM2-135M-Instruct.Q4_1.gguf
    rm -f "$gguf.tmp"
    echo "GGUF parts staged in $stage: $(ls "$stage" | tr '\n' ' ')($size of 98362432 bytes);" \
         "call again at once carrying the other half (.gguf/a, then .gguf/b with .whl)"
    exit 0
  fi
  mv "$gguf.tmp" "$gguf"
fi
source benchmarks/gpu_setup.sh || exit 1
export EGO3S_SMOL_GGUF=$gguf
ls -la "$gguf"
restore=${RESTORE:-experiments/egosynth/results/table_pack.tgz}
args=(--time-limit $((limit - 30)) --pack "${OUT:-/tmp}/egosynth_table.tgz")  # rows are started only if their estimate fits
[ -n "$rows" ] && args+=(--rows "$rows")
[ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")  # another table config (default: table.yaml)
[ -n "${SELECT_ONLY:-}" ] && args+=(--select-only "$SELECT_ONLY")  # base model + these selections, no rows
[ -f "$restore" ] && args+=(--restore "$restore")
timeout "$limit" python3 experiments/egosynth/run.py "${args[@]}" 2>&1 \
  | grep --line-buffered -v "cap_pixels_per_frame\|Loading weights\|Writing model\|it/s\]$\|s/it\]$" | tee -a "${OUT:-/tmp}/table_run.log"
rc=${PIPESTATUS[0]}
echo "driver exit: $rc"
if [ "$rc" != 0 ]; then  # killed by the time box: table and pack from what is finished
  python3 experiments/egosynth/run.py --table-only --pack "${OUT:-/tmp}/egosynth_table.tgz" 2>&1 | tail -3
fi
# the study's results and table come back as files of their own too (docs/egosynth_study.md)
run_dir=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['out'])" "${CONFIG:-experiments/egosynth/table.yaml}")
cp "$run_dir/egosynth.json" "$run_dir/table.md" "${OUT:-/tmp}/" 2>/dev/null
ls -la "${OUT:-/tmp}"
exit $rc
