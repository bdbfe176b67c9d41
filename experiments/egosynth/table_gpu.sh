#!/usr/bin/env bash
# The EgoSynth study's table on the GPU image, one time-boxed call at a time (docs/egosynth_study.md).
# From the repo root:
#   bash experiments/egosynth/table_gpu.sh [ROWS] [SECONDS]
# ROWS: comma-separated rows (default: all, in table.yaml's order); SECONDS: this call's time box
# (default 570, under the device's 600 s per command). Rerun it until run.log says "rows to run: none":
# finished rows are skipped, a killed stage resumes. Needs .whl/ (benchmarks/gpu_wheels.sh) and the
# smol GGUF split in three (`split -n 3 -d -a 2 FILE gguf_part_`, parts in .gguf/a, .gguf/b, .gguf/c),
# carried one part per call, in calls back to back: a working tree of 14 MB, .whl (3.5 MB) and half
# of the GGUF (49 MB) no longer fit the 64 MiB a call may carry. `carry: [.gguf/a]`, then
# `[.gguf/b]` (each only stages its part and exits), then `[.whl, .gguf/c]`, which runs.
# Restores an earlier session's results from $RESTORE (default experiments/egosynth/results/table_pack.tgz)
# and packs the small results into $OUT/egosynth_table.tgz. CONFIG=path runs another table config;
# SELECT_ONLY=csm prepares the base model and runs only that selection (run.py --select-only).
set -uo pipefail
rows=${1:-}
limit=${2:-570}
# The GGUF travels in parts, one per call; a path not carried is removed from the device's
# checkout, so each part is staged in /tmp, which lasts while the machine stays warm (30 s idle).
gguf=/tmp/smol.gguf
stage=/tmp/ego3s_gguf
if [ ! -s "$gguf" ]; then
  mkdir -p "$stage"
  for part in .gguf/*/gguf_part_*; do [ -f "$part" ] && cp -f "$part" "$stage/"; done
  cat $(ls "$stage"/gguf_part_* 2>/dev/null | sort) > "$gguf.tmp" 2>/dev/null
  size=$(stat -c %s "$gguf.tmp")
  if [ "$size" -gt 98362432 ]; then  # parts of another split staged by an earlier call on this machine
    rm -rf "$stage" "$gguf.tmp"
    echo "GGUF parts of two different splits were staged ($size bytes > 98362432): cleared them;" \
         "carry the parts again, one call each, starting with .gguf/a"
    exit 1
  fi
  if [ "$size" != 98362432 ]; then  # SmolLM2-135M-Instruct.Q4_1.gguf
    rm -f "$gguf.tmp"
    echo "GGUF parts staged in $stage: $(ls "$stage" | tr '\n' ' ')($size of 98362432 bytes);" \
         "call again at once carrying the next part (.gguf/a, .gguf/b, then .gguf/c with .whl)"
    exit 0
  fi
  if ! echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf.tmp" | sha256sum -c --quiet; then  # same size, other bytes: mixed parts
    rm -rf "$stage" "$gguf.tmp"
    echo "the staged GGUF parts do not make SmolLM2-135M-Instruct.Q4_1.gguf (sha256 differs): cleared" \
         "them; carry the parts again, one call each, starting with .gguf/a"
    exit 1
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
