#!/usr/bin/env bash
# The chosen defaults (per-head base rates, the head's own classifier BatchNorm, no warm-up), from the
# repository root on the project's 2-core CPU:
#  1. on the data they were chosen on (a Fashion-MNIST training-file subset, 32x32, batch 64), 3 seeds;
#  2. on two image folders nobody chose anything on (make_folders.py), every data setting at the
#     image folder's defaults but image_size 32 (and 1,000 val images for the Fashion test-file folder), 2 seeds.
# Every run: 3 epochs, best.ckpt chosen on val, tested once.
set -euo pipefail
D=docs/results/defaults_new_data
FOLDERS=${FOLDERS:-/tmp/gmsop_defaults_folders}
[ -d "$FOLDERS/digits28" ] || python $D/make_folders.py "$FOLDERS"
COMMON="trainer.max_epochs=3 logger=no_wandb trainer.enable_progress_bar=false head=gap,gmsop,gmgap,isqrt"
python -m gmsop.train -m name=chosen runs_dir=$D/chosen/run_folders $COMMON seed=0,1,2 \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64
python -m gmsop.train -m name=check_fashion_t10k runs_dir=$D/check/run_folders $COMMON seed=0,1 \
  data=imagefolder data.root=$FOLDERS/fashion_t10k data.image_size=32 data.val_size=1000
python -m gmsop.train -m name=check_digits28 runs_dir=$D/check/run_folders $COMMON seed=0,1 \
  data=imagefolder data.root=$FOLDERS/digits28 data.image_size=32
find $D/chosen $D/check -name checkpoints -type d -prune -exec rm -rf {} +
