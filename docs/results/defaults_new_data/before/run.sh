#!/usr/bin/env bash
# Issue 27's first measurement: every head at the toolkit's defaults (batch 64, SGD lr 0.1, no
# warm-up) and at a 4x lower rate (0.025 = 0.1 x 64/256, the paper's rate scaled to batch 64),
# 3 epochs, two seeds, on a Fashion-MNIST subset: 4,000 training images, 1,000 val images held
# out of the training file, 2,000 test images, 32x32. From the repository root, 2 CPU cores.
# Made when optim.lr was the rate itself and every head had BN before the classifier; today's
# code runs the same settings with optim.lr_scaling=none model.bn=true (added below).
set -euo pipefail
python -m gmsop.train -m name=defaults_new_data \
  runs_dir=docs/results/defaults_new_data/before/run_folders \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb \
  trainer.enable_progress_bar=false \
  optim.lr_scaling=none model.bn=true \
  seed=0,1 optim.lr=0.1,0.025 head=gap,gmsop,gmgap,isqrt
