#!/usr/bin/env bash
# The vision probe (experiments/egosynth/vision_probe.py) at three resolutions on one GPU: can the
# smol vision tower, from scratch, learn which object the hand takes? At each resolution, with the
# object label alone (box weight 0) and with the dense box loss of ego3s.train.vision_pretrain
# (box weight 1). Each run is time-boxed; results go to ${OUT:-/tmp}/probe_SIDE_bwW.json (6 files)
# and one table to stdout. From the repository root:
#   bash experiments/egosynth/probe_gpu.sh [TRAIN_CLIPS] [EPOCHS] [SIDES]
set -u
train=${1:-4000}
epochs=${2:-8}
sides=${3:-"112 168 224"}
source benchmarks/gpu_setup.sh || exit 1
export PYTHONUNBUFFERED=1
data=/tmp/probe_data_$train
for side in $sides; do
  for bw in 0 1; do
    echo "=== side $side, box weight $bw"
    timeout 150 python3 experiments/egosynth/vision_probe.py --side "$side" --train "$train" --test 300 \
        --epochs "$epochs" --box-weight "$bw" --workers 16 --data "$data" \
        --out "${OUT:-/tmp}/probe_${side}_bw$bw.json" 2>&1 | grep --line-buffered -v "Qwen2VL video processing"
  done
done
python3 - "${OUT:-/tmp}" <<'PY'
import json, pathlib, sys
print("| side | box weight | train clips | epochs | train acc | test_id full | atypical full | test_id context | atypical context | s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
rows = [json.loads(p.read_text()) for p in pathlib.Path(sys.argv[1]).glob("probe_*_bw*.json")]
for r in sorted(rows, key=lambda r: (r["side"], r["box_weight"])):
    print(f"| {r['side']} | {r['box_weight']:g} | {r['train']} | {r['epochs']} | {r['train_acc']:.3f} | {r['id_full']:.3f} | "
          f"{r['atypical_full']:.3f} | {r['id_context']:.3f} | {r['atypical_context']:.3f} | {r['train_s']:.0f} |")
PY
