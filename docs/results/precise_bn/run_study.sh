#!/usr/bin/env bash
# GAP and GM-SOP-16-8 at the image folder's defaults on three folders nobody chose a default on
# (make_folders.py), 5 seeds each, before and after the BatchNorm statistics pass:
#   before: model.precise_bn_batches=0 (validated with the running statistics training leaves)
#   after:  model.precise_bn_batches=20 (the count choose_batches.py chose; re-estimated before each validation)
# Every run: 3 epochs, data.image_size=32, best.ckpt chosen on val, tested once. Training itself is the
# same in both (the pass draws nothing from the random generators): only what is validated differs.
# From the repository root, with the project's environment active (python is its Python), on the
# project's 2-core CPU: two multiruns at a time, one thread each.
set -euo pipefail
D=docs/results/precise_bn
FOLDERS=${FOLDERS:-/tmp/gmsop_precise_bn_folders}
[ -d "$FOLDERS/textures" ] || python $D/make_folders.py "$FOLDERS"
COMMON="trainer.max_epochs=3 logger=no_wandb trainer.enable_progress_bar=false head=gap,gmsop seed=0,1,2,3,4 data=imagefolder data.image_size=32"
run() {  # name, precise batches, data overrides
  local name=$1 batches=$2; shift 2
  OMP_NUM_THREADS=1 python -m gmsop.train -m name=$name runs_dir=$D/study/run_folders $COMMON \
    model.precise_bn_batches=$batches "$@" > $D/study/logs/$name.log 2>&1
}
mkdir -p $D/study/logs
for folder in fashion_t10k digits28 textures; do
  extra=(data.root=$FOLDERS/$folder)
  [ $folder = fashion_t10k ] && extra+=(data.val_size=1000)
  run ${folder}_before 0 "${extra[@]}" & before=$!
  run ${folder}_after 20 "${extra[@]}" & after=$!
  wait $before && wait $after  # (a failed multirun stops the script; its log says why)
done
find $D/study -name checkpoints -type d -prune -exec rm -rf {} +
