#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the wheels the GPU image lacks; benchmarks/gpu_setup.sh installs
# them there. The image has torch, transformers, numpy, regex and OpenCV, but no TRL, datasets,
# gguf, rouge-score or nltk. Without rouge-score/nltk every ROUGE-L (the open-answer reward's
# correctness rule and partial credit, and the R-L column of every evaluation) cannot be computed:
# ego3s raises then, where it used to score 0. About 4 MB; run from the repository root.
set -euo pipefail
mkdir -p .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
  trl==1.16.0 datasets==4.8.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 \
  nltk==3.10.4 absl-py==2.5.1 joblib==1.6.0 click==8.5.1 six==1.17.0
python3 -m pip wheel -q --no-deps rouge-score==0.1.2 -w .whl  # published as a source archive only
ls -la .whl
