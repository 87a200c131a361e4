#!/usr/bin/env bash
# The transfer run of docs/results/transfer_digits (CPU-sized): pretrain on Fashion-MNIST with GAP,
# export the backbone, fine-tune on digits with five heads against the same heads from scratch.
# Needs: apt-get install dataset-fashion-mnist. Run from the repository root: bash docs/results/transfer_digits/run.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=docs/results/transfer_digits
start=$(date +%s)
$PY -m gmsop.train experiment=transfer/fashion_pretrain trainer.enable_progress_bar=false
pretrain=$(ls -td runs/transfer_fashion_pretrain/*/ | head -1)
$PY -m gmsop.export "${pretrain}checkpoints/best.ckpt" weights/fashion_resnet18_64.safetensors
mid=$(date +%s)
$PY -m gmsop.train -m experiment=transfer/digits_finetune trainer.enable_progress_bar=false
end=$(date +%s)
$PY -m gmsop.report "$(ls -td runs/transfer_digits/multirun_*/ | head -1)" --out $OUT
cp "${pretrain}summary.json" $OUT/pretrain_summary.json
echo "pretrain + export: $((mid - start)) s; ten fine-tuning runs: $((end - mid)) s" | tee $OUT/times.txt
