#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the wheels the GPU image lacks; benchmarks/gpu_setup.sh installs
# them there. The image has torch, transformers, numpy, regex, absl-py, click, joblib, six and
# OpenCV, but no TRL, datasets, gguf, rouge-score or nltk. Without rouge-score and nltk no ROUGE-L
# can be computed (the open-answer reward's correctness rule and partial credit, the R-L column of
# every evaluation): ego3s raises then. About 3.5 MB; run from the repository root.
set -euo pipefail
mkdir -p .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
  trl==1.16.0 datasets==4.8.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 \
  nltk==3.10.4
python3 -m pip wheel -q --no-deps rouge-score==0.1.2 -w .whl  # published as a source archive only
ls -la .whl
