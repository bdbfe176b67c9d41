#!/usr/bin/env bash
# The vision probe (experiments/egosynth/vision_probe.py) at three resolutions on one GPU: can the
# smol vision tower, from scratch, learn which object the hand takes? Each setting is time-boxed;
# results go to ${OUT:-/tmp}/probe_SIDE.json and one table to stdout. From the repository root:
#   bash experiments/egosynth/probe_gpu.sh [TRAIN_CLIPS] [EPOCHS] [SIDES]
set -u
train=${1:-8000}
epochs=${2:-8}
sides=${3:-"112 168 224"}
source benchmarks/gpu_setup.sh || exit 1
export PYTHONUNBUFFERED=1
data=/tmp/probe_data_$train
for side in $sides; do
  echo "=== side $side"
  timeout 240 python3 experiments/egosynth/vision_probe.py --side "$side" --train "$train" --test 300 \
      --epochs "$epochs" --workers 16 --data "$data" --out "${OUT:-/tmp}/probe_$side.json" 2>&1 \
    | grep --line-buffered -v "Qwen2VL video processing"
done
python3 - "${OUT:-/tmp}" <<'PY'
import json, pathlib, sys
print("| side | train clips | epochs | train acc | test_id full | atypical full | test_id context | atypical context | s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for p in sorted(pathlib.Path(sys.argv[1]).glob("probe_*.json"), key=lambda p: int(p.stem.split("_")[1])):
    r = json.loads(p.read_text())
    print(f"| {r['side']} | {r['train']} | {r['epochs']} | {r['train_acc']:.3f} | {r['id_full']:.3f} | "
          f"{r['atypical_full']:.3f} | {r['id_context']:.3f} | {r['atypical_context']:.3f} | {r['train_s']:.0f} |")
PY
