#!/usr/bin/env bash
# Multi-GPU proof runs on one host with 2+ GPUs (docs/multigpu.md). From the repo root:
#   bash experiments/multigpu/run.sh parity   # tiny model: 1 GPU vs DDP vs ZeRO-3, same global batch; ECR on
#   bash experiments/multigpu/run.sh eval     # torchrun eval, 1 vs N processes (tiny fp32, 3B bf16)
#   bash experiments/multigpu/run.sh zero3    # 3B architecture (random bf16): ZeRO-3 on N GPUs vs 1 GPU
# Needs benchmarks/gpu_setup.sh's wheels (trl, datasets, deepspeed and its pydantic/hjson).
# Work folder $MG (default /root/mg) is reused by later phases; results go to $OUT/mg_<phase>.*
set -uo pipefail
phase=${1:?phase: parity, eval or zero3}
source benchmarks/gpu_setup.sh || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export DS_BUILD_OPS=0 ACCELERATE_LOG_LEVEL=warning
N=$(nvidia-smi -L | wc -l)
MG=${MG:-/root/mg}
OUTDIR=${OUT:-/tmp}
mkdir -p "$MG"
ego3s() { python3 -m ego3s.cli "$@"; }
quiet() { grep --line-buffered -v "Loading weights\|Writing model\|it/s\]$\|s/it\]$" ; }

memwatch() {  # memwatch FILE: sample every GPU's used memory every 0.5 s until killed
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$1" &
  echo $!
}

yaml() {  # yaml FILE key=value...: a training config
  python3 - "$@" <<'PY'
import sys, yaml
path, *kv = sys.argv[1:]
cfg = {}
for item in kv:
    k, v = item.split("=", 1)
    node = cfg
    *parents, leaf = k.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(v)
yaml.safe_dump(cfg, open(path, "w"))
PY
}

if [ "$phase" = parity ]; then
  ego3s build-model tiny --out "$MG/tiny" | quiet
  ego3s synth --out "$MG/tiny_data" --train 12 --test 16 --probe 0 --frames 8 --size 56 --no-audit | tail -1
  python3 - "$MG" <<'PY'
import json, sys
mg = sys.argv[1]
from ego3s.data import read_jsonl, write_jsonl
samples = read_jsonl(f"{mg}/tiny_data/train.jsonl")  # video paths resolved against the data folder
write_jsonl(f"{mg}/selected.jsonl", samples[:4])
json.dump({s.id: 1.0 for s in samples}, open(f"{mg}/relevance.json", "w"))
PY
  common=(model="$MG/tiny" data="$MG/selected.jsonl" candidates="$MG/tiny_data/train.jsonl" batch_size=16
    num_generations=4 max_completion_length=12 max_steps=6 save_steps=6 learning_rate=1.0e-3 beta=0.0 nframes=4
    max_pixels=3136 min_pixels=784 dtype=float32 layout_invariant_sampling=true relevance_file="$MG/relevance.json"
    backend=opencv ecr.ecr=true ecr.monitoring_unit=steps ecr.monitoring_interval=2 ecr.probing_set_size=8 ecr.mastered_window=2
    ecr.min_pool_size=1 csm.lambda_c=-2.0 csm.lambda_f=-1.0e9 csm.lambda_o=-2.0)
  yaml "$MG/one.yaml" "${common[@]}" out="$MG/one" per_device_train_batch_size=16
  yaml "$MG/ddp.yaml" "${common[@]}" out="$MG/ddp" per_device_train_batch_size=$((16 / N))
  yaml "$MG/z3.yaml" "${common[@]}" out="$MG/z3" per_device_train_batch_size=$((16 / N))
  rm -rf "$MG/one" "$MG/ddp" "$MG/z3"
  t0=$SECONDS; CUDA_VISIBLE_DEVICES=0 python3 -m ego3s.cli train --config "$MG/one.yaml" 2>&1 | quiet \
    > "$OUTDIR/mg_train_one.log"; tail -2 "$OUTDIR/mg_train_one.log"; echo "one GPU: $((SECONDS - t0)) s"
  if [[ " ${RUNS:-ddp z3} " == *" ddp "* ]]; then
  t0=$SECONDS; accelerate launch --multi_gpu --num_processes "$N" --mixed_precision no -m ego3s.cli train \
    --config "$MG/ddp.yaml" 2>&1 | quiet > "$OUTDIR/mg_train_ddp.log"; tail -2 "$OUTDIR/mg_train_ddp.log"
  echo "DDP x$N: $((SECONDS - t0)) s"
  fi
  t0=$SECONDS; accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes "$N" \
    --mixed_precision no -m ego3s.cli train --config "$MG/z3.yaml" 2>&1 | quiet > "$OUTDIR/mg_train_z3.log"
  grep -m1 -B2 -A30 "Traceback" "$OUTDIR/mg_train_z3.log" || tail -3 "$OUTDIR/mg_train_z3.log"
  echo "ZeRO-3 x$N: $((SECONDS - t0)) s"
  for run in ${RUNS:-ddp z3}; do
    echo "== one GPU vs $run"; python3 experiments/multigpu/compare.py "$MG/one" "$MG/$run" --json "$OUTDIR/mg_parity_$run.json"
  done
  tar czf "$OUTDIR/mg_parity_runs.tgz" -C "$MG" --ignore-failed-read one/rewards.jsonl one/ecr_events.jsonl \
    one/log_history.json ddp/rewards.jsonl ddp/ecr_events.jsonl z3/rewards.jsonl z3/ecr_events.jsonl \
    one/ecr_timeline.png ddp/ecr_timeline.png z3/ecr_timeline.png 2>/dev/null
fi

if [ "$phase" = eval ]; then
  [ -d "$MG/tiny" ] || ego3s build-model tiny --out "$MG/tiny" | quiet
  [ -f "$MG/tiny_data/test_id.jsonl" ] || ego3s synth --out "$MG/tiny_data" --train 12 --test 16 --probe 0 --frames 8 --size 56 --no-audit | tail -1
  [ -f "$MG/data448/test_id.jsonl" ] || ego3s synth --out "$MG/data448" --train 32 --test 64 --probe 0 --frames 16 --size 448 --no-audit | tail -1
  [ -f "$MG/ref3b/config.json" ] || python3 -c "from ego3s.models.reference import build_reference as b; b('$MG/ref3b', '3b')" 2>&1 | quiet
  for spec in "tiny:$MG/tiny:$MG/tiny_data:float32:3136:8" "3b:$MG/ref3b:$MG/data448:bfloat16:200704:16"; do
    IFS=: read -r name model data dtype px frames <<< "$spec"
    args=(--data EgoSynth --path "EgoSynth=$data" --model "$model" --batch-size 8 --frames "$frames" --backend opencv
      --max-pixels "$px"
      --min-pixels "$px" --max-new-tokens 16 --dtype "$dtype" --quiet)
    rm -rf "$MG/eval_${name}_1" "$MG/eval_${name}_$N"
    t0=$(date +%s.%N); CUDA_VISIBLE_DEVICES=0 python3 -m ego3s.cli eval "${args[@]}" --out "$MG/eval_${name}_1" 2>&1 | quiet | tail -3
    t1=$(date +%s.%N); torchrun --standalone --nproc-per-node="$N" -m ego3s.cli eval "${args[@]}" --out "$MG/eval_${name}_$N" 2>&1 | quiet | tail -3
    t2=$(date +%s.%N)
    python3 - "$MG/eval_${name}_1" "$MG/eval_${name}_$N" "$t0" "$t1" "$t2" "$name" "$OUTDIR/mg_eval_$name.json" <<'PY'
import json, sys
from pathlib import Path
from ego3s.eval.run import read_predictions
a, b, t0, t1, t2, name, out = sys.argv[1:]
ra, rb = json.loads((Path(a) / "results.json").read_text()), json.loads((Path(b) / "results.json").read_text())
pa = {k: v.get("output") for k, v in read_predictions(Path(a) / "egosynth").items()}
pb = {k: v.get("output") for k, v in read_predictions(Path(b) / "egosynth").items()}
same = sum(pa[k] == pb.get(k) for k in pa)
res = {"model": name, "samples": len(pa), "identical_outputs": same,
       "identical_metrics": ra["benchmarks"]["egosynth"]["metrics"] == rb["benchmarks"]["egosynth"]["metrics"],
       "world_sizes": [ra["world_size"], rb["world_size"]],
       "wall_s_1": round(float(t1) - float(t0), 1), "wall_s_N": round(float(t2) - float(t1), 1),
       "eval_s": [ra.get("seconds"), rb.get("seconds")]}
print(json.dumps(res))
Path(out).write_text(json.dumps(res, indent=1))
PY
  done
fi

if [ "$phase" = zero3 ]; then
  [ -f "$MG/data448/train.jsonl" ] || ego3s synth --out "$MG/data448" --train 32 --test 64 --probe 0 --frames 16 --size 448 --no-audit | tail -1
  [ -f "$MG/ref3b/config.json" ] || python3 -c "from ego3s.models.reference import build_reference as b; b('$MG/ref3b', '3b')" 2>&1 | quiet
  common=(model="$MG/ref3b" data="$MG/data448/train.jsonl" batch_size=16 num_generations=8
    max_completion_length=${ZLEN:-128} max_steps=${ZSTEPS:-4} save_steps=1000 learning_rate=1.0e-6 beta=0.0 nframes=16
    max_pixels=200704 min_pixels=200704 gradient_checkpointing=true logging_steps=1 backend=opencv ecr.ecr=false
    layout_invariant_sampling=true)
  yaml "$MG/z3_3b.yaml" "${common[@]}" out="$MG/z3_3b" per_device_train_batch_size=$((16 / N))
  yaml "$MG/one_3b.yaml" "${common[@]}" out="$MG/one_3b" per_device_train_batch_size=8
  rm -rf "$MG/z3_3b" "$MG/one_3b"
  if [ "${SKIP_Z3:-0}" != 1 ]; then
  pid=$(memwatch "$OUTDIR/mg_mem_z3_3b.csv")
  t0=$SECONDS; timeout "${ZTIMEOUT:-600}" accelerate launch --config_file configs/accelerate/zero3.yaml \
    --num_processes "$N" -m ego3s.cli train --config "$MG/z3_3b.yaml" 2>&1 | quiet > "$OUTDIR/mg_train_z3_3b.log"
  grep -m1 -B2 -A30 "Traceback" "$OUTDIR/mg_train_z3_3b.log" || tail -3 "$OUTDIR/mg_train_z3_3b.log"
  echo "ZeRO-3 3B x$N: $((SECONDS - t0)) s"; kill "$pid"
  fi
  if [ "${SKIP_ONE:-0}" != 1 ]; then
    pid=$(memwatch "$OUTDIR/mg_mem_one_3b.csv")
    t0=$SECONDS; CUDA_VISIBLE_DEVICES=0 timeout "${ZTIMEOUT:-600}" python3 -m ego3s.cli train --config "$MG/one_3b.yaml" 2>&1 | quiet \
      > "$OUTDIR/mg_train_one_3b.log"; tail -3 "$OUTDIR/mg_train_one_3b.log"
    echo "one GPU 3B: $((SECONDS - t0)) s"; kill "$pid"
  fi
  python3 - "$MG" "$OUTDIR" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
mg, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {}
for run in ("z3_3b", "one_3b"):
    p = mg / run / "log_history.json"
    hist = json.loads(p.read_text()) if p.exists() else []
    mem = {}
    f = out / f"mg_mem_{run}.csv"
    if f.exists():
        for row in csv.reader(f.open()):
            if len(row) == 2 and row[1].strip().isdigit():
                mem[row[0].strip()] = max(mem.get(row[0].strip(), 0), int(row[1]))
    st = [h["step_time"] for h in hist if "step_time" in h]
    res[run] = {"steps": len(st), "step_time_s": st, "median_step_s": statistics.median(st[1:] or st) if st else None,
                "peak_mem_mib_per_gpu": mem, "loss": [h.get("loss") for h in hist if "loss" in h],
                "completion_len": [h.get("completions/mean_length") for h in hist if "loss" in h]}
print(json.dumps(res, indent=1))
(out / "mg_zero3.json").write_text(json.dumps(res, indent=1))
PY
fi
