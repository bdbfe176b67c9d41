#!/usr/bin/env bash
# Variants of the draft CPU demo, side by side on one GPU machine (the device tool), to choose
# the demo's settings before timing them on 2 CPU cores. Writes $OUT/demo_sweep.tar.gz with each
# run's summary, manifest, report and logs (no checkpoints or videos).
#   bash experiments/demo_world/sweep_gpu.sh
set -u
source benchmarks/gpu_setup.sh || exit 1
D=experiments/demo_world/demo_draft.yaml
G="warmup.backend=opencv selection.scoring.backend=opencv training.backend=opencv evaluation.backend=opencv"
G="$G warmup.workers=2 warmup.vision_pretrain.workers=2 evaluation.progress=false"
mkdir -p runs
v() { name=$1; shift; timeout ${LIMIT:-500} python3 -m ego3s.cli run --config $D out=runs/$name $G "$@" \
        > runs/$name.log 2>&1; echo "$name rc=$?" >> runs/status.txt; }
v v1 &
v w600 warmup.steps=600 &
v lr2e4 training.learning_rate=2.0e-4 &
v s80 training.max_steps=80 training.learning_rate=1.0e-4 &
v vp800 warmup.vision_pretrain.steps=800 &
v w2 egosynth.scenes=2 egosynth.max_distractors=1 warmup_egosynth.scenes=2 warmup_egosynth.max_distractors=1 &
wait
cat runs/status.txt
for r in v1 w600 lr2e4 s80 vp800 w2; do
  echo "== $r"; grep -a "\] done\|Error\|error:" runs/$r.log | tail -12 | cut -c1-240
  python3 -c "import json,sys; s=json.load(open('runs/$r/summary.json')); print(json.dumps(s['mechanisms'])[:900]); print(json.dumps(s['eval'])[:900])" 2>/dev/null
done
tar czf $OUT/demo_sweep.tar.gz --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' --exclude='*.mp4' \
  --exclude='checkpoint-*' --exclude='videos' runs 2>/dev/null
ls -la $OUT
