# Source this on the GPU image (torch + transformers, no TRL/datasets/rouge-score): installs the
# carried wheels (.whl/, filled by benchmarks/gpu_wheels.sh) and stops before any GPU time is spent
# when a package the rewards or the evaluation need is missing.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)" || return 1
python3 -c "from ego3s.rewards import check_metric_packages; check_metric_packages(); print('ROUGE-L: ok')" || {
  echo "gpu_setup: carry the wheels of benchmarks/gpu_wheels.sh (.whl/)" >&2
  return 1
}
