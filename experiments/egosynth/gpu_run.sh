#!/usr/bin/env bash
# The EgoSynth study on the GPU image (see docs/notes/gpu_studies_2026-11.md). Usage, from the repo root:
#   bash experiments/egosynth/gpu_run.sh [CONFIG] [SECONDS]
# Needs benchmarks/gpu_setup.sh's wheels and the smol GGUF at $EGO3S_SMOL_GGUF. Resumable: a
# rerun continues the run folder. Packs the small outputs into $OUT/egosynth_run.tgz.
set -uo pipefail
cfg=${1:-configs/egosynth_gpu.yaml}
limit=${2:-560}
source benchmarks/gpu_setup.sh || exit 1
out=$(python3 -c "import yaml,sys; print(yaml.safe_load(open('$cfg'))['out'])")
timeout "$limit" python3 -m ego3s.cli run --config "$cfg" 2>&1 | grep -v "Loading weights\|Writing model\|it/s\]$" | tee -a "${OUT:-/tmp}/run.log"
rc=${PIPESTATUS[0]}
echo "pipeline exit: $rc"
cd "$out" && tar czf "${OUT:-/tmp}/egosynth_run.tgz" --ignore-failed-read manifest.json select/report.json \
  select/report.md select/scores.csv select/hist_coarse.png select/hist_fine.png warmup/log_history.json \
  train/log_history.json train/rewards.jsonl train/ecr_events.jsonl train/ecr_state.json train/ecr_timeline.png \
  eval/base/results.json eval/base/results.md eval/trained/results.json eval/trained/results.md \
  report/index.html data/audit.json 2>/dev/null
ls -la "${OUT:-/tmp}"
exit $rc
