#!/usr/bin/env bash
# One GPU slot (about 15 minutes of device time): every GPU measurement of the throughput work at
# once, each part under its own time limit, results as JSON in $OUT (default
# docs/results/benchmarks/). A part stopped at its limit keeps what it measured (the suite
# writes its file after every row).
#   (g) every Table-1 row through the real data path: recipe, bf16, channels_last, static
#       dispatch, compile, CUDA graphs (ResNet-18 rows first, then WRN-36-2);
#   (c) GM-SOP-16-8 dispatch: sparse / dense, static / sparse, bf16, B=256;
#   (f) the loader beside the model at B=256.
# Packages: the machine's own, or wheels in .whl/ (carried), installed into /tmp/site.
set -u
cd "$(dirname "$0")/.."
if [ -d .whl ] && [ ! -d /tmp/site/lightning ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
OUT=${OUT:-docs/results/benchmarks}
mkdir -p "$OUT"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' _ | tr -s _)
tag=cuda_${gpu:-gpu}
nvidia-smi > "$OUT/${tag}_nvidia_smi.txt" 2>&1
B=benchmarks/suite.py
timeout 300 python3 $B --device cuda --only g --steps 20 --warmup 5 --workers 8 \
  --rows imagenet64_resnet18_gmsop_16_8,imagenet64_resnet18_gap,imagenet64_resnet18_srsop,imagenet64_resnet18_gmgap_16_8 \
  --out "$OUT/${tag}_g_resnet18.json"
timeout 200 python3 $B --device cuda --only g --steps 10 --warmup 5 --workers 8 \
  --rows imagenet64_wrn36_2_gmsop_16_8,imagenet64_wrn36_2_gmgap_16_8 --out "$OUT/${tag}_g_wrn36_2.json"
timeout 90 python3 $B --device cuda --amp --only c,f --batch 256 --out "$OUT/${tag}_c_f_b256.json"
for f in "$OUT"/${tag}_g_*.json; do python3 benchmarks/paper_rows.py "$f"; done
