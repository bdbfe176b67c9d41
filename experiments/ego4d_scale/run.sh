#!/usr/bin/env bash
# The README's "At scale" path end to end, with the README's commands and the examples/ scripts as
# written: Ego4D layout -> `ego3s build-ego4d` -> `ego3s select` (CSM, likelihood;
# examples/qwen2_5_vl_7b_ego3s_selection.sh) -> `accelerate launch ... ego3s train` (LoRA, then
# full fine-tuning; examples/qwen2_5_vl_7b_ego3s_grpo.sh, ECR on) -> `ego3s merge` -> `ego3s eval`
# on the built data (--view full and --view context). Each stage is measured (wall time, peak GPU
# and host memory, disk written, rate: experiments/ego4d_scale/measure.py) into $WORK/stages.jsonl
# and the table $WORK/table.md. From the repository root:
#
#   bash experiments/ego4d_scale/run.sh                 # 7B architecture (random bf16), one GPU
#   SCALE=tiny bash experiments/ego4d_scale/run.sh      # tiny model, small clips: the CPU check
#
# The data is the Ego4D stand-in of make_standin.py unless EGO4D names a real Ego4D folder (the one
# holding v2/); MODEL names a real model folder instead of the random-weight build. What differs
# from the scripts' 8-GPU settings is only what one device forces: one process, a few optimizer
# steps (STEPS) of a smaller batch (BATCH completions), ECR checked every step so that a refresh
# (re-scoring with the policy) happens inside those steps, CSM topped up to MIN_KEPT samples
# (`min_kept`: random weights keep only what chance gives), and no benchmark evaluation (the
# evaluation runs on the built pool instead). Everything else comes from configs/*.yaml.
#
# Settings (environment): SCALE (7b or tiny), WORK, EGO4D, MODEL, VIDEOS, MINUTES, WIDTH, HEIGHT,
# FPS, MIN_KEPT, STEPS, BATCH, GENERATIONS, MAX_COMPLETION, EVAL_LIMIT, LORA_ACCELERATE, FT_ACCELERATE,
# FULL_FT (1: also full fine-tuning), STAGES (comma-separated subset of: standin,model,build,
# select,lora,merge,eval,ft,eval_ft; default all), CLEAN (1: delete a stage's large outputs once
# the next stage has read them), EVAL_MODEL (default: the merged LoRA model), SELECTED (what GRPO
# trains on; default: the CSM selection), SELECT_ARGS / TRAIN_ARGS / FT_ARGS / EVAL_ARGS (extra overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/ego4d_scale
SCALE=${SCALE:-7b}
PY=${PYTHON:-python3}
if [[ "$SCALE" == tiny ]]; then  # the CPU check: a few small clips and the tiny model
  : "${VIDEOS:=2}" "${MINUTES:=0.5}" "${WIDTH:=320}" "${HEIGHT:=180}" "${STEPS:=2}" "${BATCH:=4}" \
    "${GENERATIONS:=2}" "${MAX_COMPLETION:=8}" "${EVAL_LIMIT:=4}" "${WORKERS:=2}" "${MIN_KEPT:=2}"
  SMALL_VIDEO="max_pixels=3136 min_pixels=784 max_frames=4"
  SELECT_SCALE="scoring.max_pixels=3136 scoring.min_pixels=784 scoring.max_frames=4 scoring.batch_size=2"
  EVAL_SCALE="--max-pixels 3136 --min-pixels 784 --max-frames 4 --batch-size 2"
else
  SMALL_VIDEO=""; SELECT_SCALE=""; EVAL_SCALE=""
fi
VIDEOS=${VIDEOS:-24}; MINUTES=${MINUTES:-2}; WIDTH=${WIDTH:-960}; HEIGHT=${HEIGHT:-540}; FPS=${FPS:-30}
STEPS=${STEPS:-3}; BATCH=${BATCH:-16}; GENERATIONS=${GENERATIONS:-8}; MAX_COMPLETION=${MAX_COMPLETION:-512}
EVAL_LIMIT=${EVAL_LIMIT:-}
MIN_KEPT=${MIN_KEPT:-16}  # random weights pass CSM by chance: top up with the closest misses (min_kept)
WORK=${WORK:-runs/ego4d_scale_$SCALE}
STAGES=${STAGES:-standin,model,build,select,lora,merge,eval,ft,eval_ft}
FULL_FT=${FULL_FT:-1}
CLEAN=${CLEAN:-0}
if $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  LORA_ACCELERATE=${LORA_ACCELERATE:-configs/accelerate/zero3.yaml}
  FT_ACCELERATE=${FT_ACCELERATE:-configs/accelerate/zero3.yaml}
else  # DeepSpeed needs a GPU
  LORA_ACCELERATE=${LORA_ACCELERATE:-configs/accelerate/one_process.yaml}
  FT_ACCELERATE=${FT_ACCELERATE:-configs/accelerate/one_process.yaml}
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/stages.jsonl
# `ego3s` as the README writes it; from a checkout without the console script, the module
if ! command -v ego3s > /dev/null; then  # a command on PATH: the examples and measure.py start it
  mkdir -p "$WORK/bin"
  printf '#!/usr/bin/env bash\nexec %q -m ego3s.cli "$@"\n' "$(command -v "$PY")" > "$WORK/bin/ego3s"
  chmod +x "$WORK/bin/ego3s"
  export PATH="$WORK/bin:$PATH"
fi
want() { [[ ",$STAGES," == *",$1,"* ]]; }
measure() {  # measure NAME OUTPUTS CMD...: run and record one stage
  local name=$1 outs=$2; shift 2
  echo "=== $name: $*"
  "$PY" $HERE/measure.py run --log "$LOG" --name "$name" --work "$WORK" --outputs "$outs" -- "$@"
}

EGO4D_ROOT=${EGO4D:-$WORK/ego4d_data}
MODEL_DIR=${MODEL:-$WORK/model}
DATA=$WORK/data/ego4d
SELECT_OUT=$WORK/select
RELEVANCE=${RELEVANCE:-$WORK/relevance.json}

# 0. the stand-in Ego4D folder and the model
if want standin && [[ -z "${EGO4D:-}" ]]; then
  measure standin "$EGO4D_ROOT" "$PY" $HERE/make_standin.py --out "$EGO4D_ROOT" --videos "$VIDEOS" \
    --minutes "$MINUTES" --width "$WIDTH" --height "$HEIGHT" --fps "$FPS" ${WORKERS:+--workers "$WORKERS"}
fi
if want model && [[ -z "${MODEL:-}" && ! -f "$MODEL_DIR/config.json" ]]; then
  if [[ "$SCALE" == tiny ]]; then
    measure build-model "$MODEL_DIR" ego3s build-model tiny --out "$MODEL_DIR"
  else
    measure build-model "$MODEL_DIR" "$PY" -c "import sys; from ego3s.models.reference import build_reference; \
build_reference(sys.argv[1], sys.argv[2])" "$MODEL_DIR" "$SCALE"
  fi
fi

# 1. README step 1: the training pool from the annotation files
if want build; then
  measure build-ego4d "$DATA" ego3s build-ego4d --annotations "$EGO4D_ROOT/v2/annotations" \
    --video-root "$EGO4D_ROOT/v2/full_scale" --out "$DATA"
fi

# 2. README step 2 / the selection example: CSM with the likelihood estimator (the build is skipped,
#    the pool exists). relevance_file: computed once with the embedder (here, or on another machine)
if want select; then
  rm -rf "$SELECT_OUT"
  measure select "$SELECT_OUT,$DATA/train.jsonl" env EGO4D="$EGO4D_ROOT" MODEL="$MODEL_DIR" DATA="$DATA" \
    SELECT_OUT="$SELECT_OUT" bash examples/qwen2_5_vl_7b_ego3s_selection.sh relevance_file="$RELEVANCE" \
    min_kept="$MIN_KEPT" $SELECT_SCALE ${SELECT_ARGS:-}
fi
SELECTED=${SELECTED:-$SELECT_OUT/selected.jsonl}  # what GRPO trains on
if [[ -f "$SELECTED" && ! -s "$SELECTED" ]]; then
  echo "CSM kept no sample (random weights keep what chance gives); nothing to train on" >&2
  exit 1
fi

# 3. README step 3 / the GRPO example on one process: a few steps, ECR checked every step
#    (lambda_s above any ratio: a refresh re-scores probing_set_size samples with the policy)
ecr_now=(ecr.monitoring_interval=1 ecr.lambda_s=1.0e9 ecr.probing_set_size=8 save_checkpoints=false)
small=(max_steps="$STEPS" batch_size="$BATCH" per_device_train_batch_size="$GENERATIONS"
       num_generations="$GENERATIONS" max_completion_length="$MAX_COMPLETION" relevance_file="$RELEVANCE"
       report_to=none)
grpo() {  # grpo NAME OUT ACCELERATE_CONFIG key=value...
  local name=$1 out=$2 accel=$3; shift 3
  rm -rf "$out"
  measure "$name" "$out" env MODEL="$MODEL_DIR" SELECTED="$SELECTED" POOL="$DATA/train.jsonl" OUT="$out" \
    NGPU=1 ACCELERATE_CONFIG="$accel" bash examples/qwen2_5_vl_7b_ego3s_grpo.sh "${small[@]}" "${ecr_now[@]}" \
    $SMALL_VIDEO "$@"
}
if want lora; then
  grpo train-lora "$WORK/lora" "$LORA_ACCELERATE" lora=true ${TRAIN_ARGS:-}
fi

# 4. fold the adapter in
if want merge; then
  rm -rf "$WORK/lora_merged"
  measure merge-lora "$WORK/lora_merged" ego3s merge "$WORK/lora/final" --out "$WORK/lora_merged" --base "$MODEL_DIR"
fi

# 5. README step 4 on the built pool: every question under the full view and the interaction-masked view
evaluate() {  # evaluate NAME MODEL VIEW
  rm -rf "$WORK/$1"
  measure "$1" "$WORK/$1" ego3s eval --data EgoSynth --path "EgoSynth=$DATA/train.jsonl" --model "$2" --view "$3" \
    --out "$WORK/$1" --quiet ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} $EVAL_SCALE ${EVAL_ARGS:-}
}
if want eval; then
  EVAL_MODEL=${EVAL_MODEL:-$WORK/lora_merged}
  evaluate eval-full "$EVAL_MODEL" full
  evaluate eval-context "$EVAL_MODEL" context
  if [[ "$CLEAN" == 1 ]]; then rm -rf "$WORK/lora_merged"; fi
fi

# 6. full fine-tuning (the example's default), then its evaluation
if [[ "$FULL_FT" == 1 ]] && want ft; then
  grpo train-full "$WORK/full" "$FT_ACCELERATE" ${FT_ARGS:-} || echo "full fine-tuning failed (see above)"
fi
if [[ "$FULL_FT" == 1 ]] && want eval_ft && [[ -f "$WORK/full/final/config.json" ]]; then
  evaluate eval-ft-full "$WORK/full/final" full
fi

"$PY" $HERE/measure.py table --log "$LOG" --json "$WORK/table.json" --md "$WORK/table.md"
