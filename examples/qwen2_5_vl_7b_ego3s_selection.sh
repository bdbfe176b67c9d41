#!/usr/bin/env bash
# Ego3S step 1 (Select) with the paper's settings for Qwen2.5-VL-7B-Instruct:
# build the 12,000-sample Ego4D OpenQA + CloseQA pool, then keep the samples that pass
# Counterfactual-based Selection (CSM: coarse lambda_c 0.1, fine lambda_f 0.5, relevance
# lambda_o 0.21; the paper keeps 3,180 of 12,000).
#
#   EGO4D=/data/ego4d MODEL=/models/Qwen2.5-VL-7B-Instruct bash examples/qwen2_5_vl_7b_ego3s_selection.sh
#
# For the 3B model run it again with the 3B policy (selection depends on the model that scores):
#   MODEL=/models/Qwen2.5-VL-3B-Instruct SELECT_OUT=runs/select_3b bash examples/qwen2_5_vl_7b_ego3s_selection.sh
set -euo pipefail

EGO4D=${EGO4D:?set EGO4D to the Ego4D data folder (the one holding v2/)}
MODEL=${MODEL:-/models/Qwen2.5-VL-7B-Instruct}   # a local Hugging Face model folder
DATA=${DATA:-data/ego4d}                          # where the training pool is written
SELECT_OUT=${SELECT_OUT:-runs/select_7b}          # selected.jsonl, scores.csv, report.md, cache/

# 1. The training pool: NLQ queries give the questions and answer windows, the FHO annotations the
#    hand-object interaction (objects, action, per-frame boxes) that CSM and the interaction reward
#    read. Full-scale videos are cut to each sample's window at decode time. Writes
#    $DATA/train.jsonl and $DATA/report.json (what was kept and why not); see docs/ego4d.md.
#    Skipped when the pool exists (the build is deterministic by --seed).
if [[ ! -f "$DATA/train.jsonl" ]]; then
  ego3s build-ego4d \
    --annotations "$EGO4D/v2/annotations" \
    --video-root "$EGO4D/v2/full_scale" \
    --out "$DATA" \
    --size 12000 --closed-fraction 0.5 --seed 0
fi

# 2. CSM: each sample is scored by the policy under three views (full clip, blind = gray clip,
#    context = interaction boxes masked) with the teacher-forced likelihood estimator, then
#    filtered. The thresholds and the 448x448 / 2 fps / 16-frame sampling are those of
#    configs/selection_config.yaml; `key=value` arguments override any of them.
#    NOTE: scoring is not sharded across GPUs yet: `ego3s select` is one process on one GPU
#    (launching it under torchrun would only score the pool N times). On one H200 the 7B scores
#    about 1.0 sample/s with all three views at this resolution (540p H.264 decoded on 16 CPU
#    cores; docs/at_scale.md), so 12,000 samples take about 3.2 hours, 20 GiB of GPU memory. The
#    score cache (cache/) makes an interrupted run resume where it stopped.
#    Arguments of this script are passed on to `ego3s select` (key=value, later ones win), e.g.
#    `relevance_file=relevance.json` on a GPU machine without the sentence embedder's package
#    (compute the file once elsewhere: docs/selection.md).
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} ego3s select \
  --config configs/selection_config.yaml \
  model="$MODEL" \
  data="$DATA/train.jsonl" \
  out="$SELECT_OUT" \
  "$@"

# 3. Result: $SELECT_OUT/selected.jsonl is the training set of the GRPO scripts; report.md has the
#    funnel (how many samples each filter removed) and the score histograms.
echo "selected subset: $SELECT_OUT/selected.jsonl (funnel in $SELECT_OUT/report.md)"
