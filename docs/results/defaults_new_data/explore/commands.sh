#!/usr/bin/env bash
# The exploration, batch by batch, as it was run (2026-12-02, the 2-core CPU; each batch after the one before).
# explore1 ran before optim.lr became a base rate: its optim.lr is the rate itself (today: add optim.lr_scaling=none).
# explore2 ran before model.bn followed the head: every head had BN (today: add model.bn=true); it was
#   stopped after 9 of its 16 runs (the last one unfinished; the table leaves it out).
# explore3-7 ran before head=gmsop/isqrt brought their own base rates: a batch without optim.lr ran at
#   0.1 (today: add optim.lr=0.1).
# The runs wrote to /tmp/explore/runs; run_folders/ holds them without checkpoints and plots.
set -euo pipefail
# explore1
python -m gmsop.train -m name=explore1 runs_dir=/tmp/explore/runs \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb \
  trainer.enable_progress_bar=false seed=0 head=isqrt \
  optim.lr=0.025,0.0125 model.bn=true,false
# explore2
python -m gmsop.train -m name=explore2 runs_dir=/tmp/explore/runs \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb \
  trainer.enable_progress_bar=false seed=0 head=gap,isqrt,gmsop,gmgap \
  optim.lr=0.1,0.2 optim.warmup_epochs=0,1
# explore3
python -m gmsop.train -m name=explore3 runs_dir=/tmp/explore/runs \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb \
  trainer.enable_progress_bar=false seed=0,1 head=isqrt,gmsop model.bn=false,true
# explore4
python -m gmsop.train -m name=explore4 runs_dir=/tmp/explore/runs \
  data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 \
  data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb \
  trainer.enable_progress_bar=false seed=0,1 head=gap,gmgap model.bn=false,true
# explore5
C="runs_dir=/tmp/explore/runs data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb trainer.enable_progress_bar=false"
python -m gmsop.train -m name=explore5 $C seed=0,1 head=gmsop optim.lr=0.2 model.bn=true
python -m gmsop.train -m name=explore5 $C seed=0,1 head=isqrt optim.lr=0.2 model.bn=false
python -m gmsop.train -m name=explore5 $C seed=0,1 head=gmsop model.dropout=0.2 model.bn=true
# explore6
C="runs_dir=/tmp/explore/runs data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb trainer.enable_progress_bar=false"
python -m gmsop.train -m name=explore6 $C seed=0,1 head=gmsop,gap,isqrt,gmgap optim.lr=0.05
# explore7
C="runs_dir=/tmp/explore/runs data=fashion_mnist data.train_subset=4000 data.val_size=1000 data.test_subset=2000 data.image_size=32 data.batch_size=64 trainer.max_epochs=3 logger=no_wandb trainer.enable_progress_bar=false"
python -m gmsop.train -m name=explore7 $C seed=0,1 head=gmsop head.balance_weight=25
