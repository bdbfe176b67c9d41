#!/usr/bin/env bash
# Ego3S steps 2-3 (Strengthen + Synchronize) with the paper's settings for Qwen2.5-VL-7B-Instruct
# on one node of 8 GPUs: GRPO with the interaction-centric reward on the CSM-selected subset, with
# Evolving Curriculum Recuration, then evaluation on the five egocentric benchmarks.
#
#   MODEL=/models/Qwen2.5-VL-7B-Instruct BENCH=/data/benchmarks bash examples/qwen2_5_vl_7b_ego3s_grpo.sh
#
# Needs the selected subset of examples/qwen2_5_vl_7b_ego3s_selection.sh, and deepspeed installed.
set -euo pipefail

MODEL=${MODEL:-/models/Qwen2.5-VL-7B-Instruct}
BENCH=${BENCH:-}                                      # benchmarks root (docs/evaluation.md); unset: train only
SELECTED=${SELECTED:-runs/select_7b/selected.jsonl}   # CSM's kept samples (training set)
POOL=${POOL:-data/ego4d/train.jsonl}                  # the whole pool: ECR's candidates
OUT=${OUT:-runs/ego3s_7b}
EVAL_OUT=${EVAL_OUT:-runs/eval_7b}
NGPU=${NGPU:-8}
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/zero3.yaml}  # or fsdp.yaml, one_process.yaml

# 1. Training. ZeRO-3 shards weights, gradients and optimizer states over the GPUs (bf16).
#    - lr 1e-6, 512 completions per optimizer step over all GPUs (per_device_train_batch_size 8 x
#      8 GPUs x 8 accumulation steps; num_generations 8 = 64 prompts per step);
#    - interaction-centric reward r_int: alpha 0.5 penalty above N 5 object mentions in <think>,
#      only when r_acc + r_fmt >= H 1.1;
#    - ECR: every 800 prompts (the paper's 100 per-device generation steps on 8 GPUs, about 12.5
#      optimizer steps of 64 prompts) compare the window's within-group reward variance with the
#      reference window; below lambda_s 0.6, re-score 500 probed samples (unselected + used) with the current
#      policy, retire mastered ones, add the newly high-value ones.
#    Checkpoints (with the curriculum state) every 50 steps; if the job dies, rerun this command
#    with --resume added after `train`. The rest comes from configs/training_config.yaml.
#    Values are read as YAML 1.1: write 1.0e-6, not 1e-6 (which YAML reads as a string).
#    Arguments of this script are passed on to `ego3s train` as further key=value overrides
#    (later ones win), e.g. `lora=true`, `max_steps=200`, `relevance_file=relevance.json`.
accelerate launch --config_file "$ACCELERATE_CONFIG" --num_processes "$NGPU" \
  -m ego3s.cli train \
  --config configs/training_config.yaml \
  model="$MODEL" \
  data="$SELECTED" \
  candidates="$POOL" \
  out="$OUT" \
  strategy=grpo \
  learning_rate=1.0e-6 \
  batch_size=512 \
  per_device_train_batch_size=8 \
  num_generations=8 \
  alpha=0.5 N=5 H=1.1 \
  ecr.ecr=true ecr.lambda_s=0.6 ecr.monitoring_unit=prompts ecr.monitoring_interval=800 ecr.probing_set_size=500 \
  "$@"

# 2. Evaluation of the trained model, data-parallel over the GPUs (each rank takes every NGPU-th
#    sample; rank 0 merges and scores). EgoTextVQA and EgoThink are judged by an LLM: set
#    OPENAI_BASE_URL / OPENAI_API_KEY and JUDGE_MODEL (without a judge their deterministic metrics
#    are still reported). Add `--fmt reasoning` to evaluate with the RL answer format
#    (<think>...</think><answer>...</answer>). Resumable: a rerun skips predictions already made.
if [[ -z "$BENCH" ]]; then
  echo "BENCH not set: evaluation skipped; model: $OUT/final"
  exit 0
fi
JUDGE=()
if [[ -n "${JUDGE_MODEL:-}" ]]; then JUDGE=(--judge-model "$JUDGE_MODEL"); fi
torchrun --nproc-per-node="$NGPU" -m ego3s.cli eval \
  --data QAEgo4D,EgoTextVQA,egoschema_subset,EgoPlan2,EgoThink \
  --model "$OUT/final" \
  --root "$BENCH" \
  --out "$EVAL_OUT" \
  "${JUDGE[@]}"

echo "model: $OUT/final; results: $EVAL_OUT/results.md"
