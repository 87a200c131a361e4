#!/usr/bin/env bash
# Fashion-MNIST study on the device machine. MODE=probe: 8 short runs at once (throughput under
# sharing); MODE=full: the four lr sweeps and the gate-balance study at once, then the converged
# ablation at each head's best lr (seeds 0 and 1, all at once). Results tarred into $OUT.
set -u
cd "$(dirname "$0")/.."
if [ -d .whl ] && [ -z "${PY:-}" ] && [ ! -d /tmp/site/optuna ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PYTHONPATH=$PWD/src:/tmp/site:$PWD/.gpu/site PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
PY=${PY:-python3}
OUT=${OUT:-/tmp/study_out}
R=${R:-results}
EPOCHS=${EPOCHS:-15}
COMMON="logger=no_wandb trainer.enable_progress_bar=false data.root=$PWD/.gpu/fashion data.num_workers=1 ${EXTRA:-}"
HEADS="gap isqrt gmgap gmsop"
mkdir -p $R/logs $OUT
log() { echo "[$(date +%T)] $*" | tee -a $R/logs/times.txt; }
timed() {
  local name=$1; shift; local t=$(date +%s)
  "$@" > $R/logs/$name.log 2>&1
  log "$name exit $? in $(( $(date +%s) - t )) s"
}
finish() { tar czf $OUT/results.tgz --exclude='*.ckpt' --exclude='optuna.db-journal' $R; ls -la $OUT; }
trap finish EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/device.txt 2>&1
$PY -c "import torch, lightning, timm, optuna, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'optuna', optuna.__version__)" >> $R/device.txt 2>&1
nproc >> $R/device.txt; cat $R/device.txt
log "start $MODE"

if [ "$MODE" = probe ]; then
  for h in $HEADS; do for s in 0 1; do
    timed probe_${h}_$s $PY -m gmsop.train experiment=ablations/fashion_converged head=$h seed=$s \
      trainer.max_epochs=1 trainer.limit_train_batches=150 trainer.limit_val_batches=30 \
      hydra.run.dir=$R/probe/${h}_$s $COMMON &
  done; done
  wait
  grep -h "images_per_s" $R/probe/*/summary.json | head -0
  for f in $R/probe/*/summary.json; do
    $PY -c "import json,sys; d=json.load(open('$f')); print('$f', round(d['metrics'].get('train_images_per_s', 0)))"
  done
  exit 0
fi

if [ "$MODE" = isqrt_low ]; then  # iSQRT's sweep chose its lowest rate (0.003): one rate lower too
  timed sweep_recipe_isqrt_0.001 $PY -m gmsop.train experiment=ablations/fashion_heads head=isqrt optim.lr=0.001 \
    hydra.run.dir=$R/sweeps/isqrt_lr0.001 $COMMON &
  for s in 0 1; do
    timed converged_isqrt_lr0.001_$s $PY -m gmsop.train experiment=ablations/fashion_converged head=isqrt optim.lr=0.001 \
      seed=$s hydra.run.dir=$R/converged/isqrt_lr0.001_seed$s $COMMON &
  done
  wait
  exit 0
fi

# phase A: the four lr sweeps and the six gate-balance runs, all at once
for h in $HEADS; do
  timed sweep_$h $PY -m gmsop.sweep experiments/sweeps/fashion_lr.yaml --trials 5 --pruner none \
    --runs-dir $R/sweeps/$h head=$h $COMMON &
done
gate() { timed gate_$1 $PY -m gmsop.train experiment=ablations/gate_balance "${@:2}" hydra.run.dir=$R/gate/$1 $COMMON; }
gate w0 head.balance_weight=0 & gate w10 head.balance_weight=10 & gate w100 head.balance_weight=100 &
gate w1000 head.balance_weight=1000 & gate load head.balance=load & gate noise_component head.noise=component &
wait
log "phase A done"

# phase B: each head at the lr its sweep found best, seeds 0 and 1, all at once
for h in $HEADS; do
  lr=$($PY -c "
import csv
rows = [r for r in csv.DictReader(open('$R/sweeps/$h/sweep_fashion_lr/trials.csv')) if r['state'] == 'COMPLETE']
print(min(rows, key=lambda r: float(r['val/top1_err']))['optim.lr'])")
  log "$h best lr $lr"
  for s in 0 1; do
    timed converged_${h}_$s $PY -m gmsop.train experiment=ablations/fashion_converged head=$h optim.lr=$lr seed=$s \
      trainer.max_epochs=$EPOCHS hydra.run.dir=$R/converged/${h}_seed$s $COMMON &
  done
done
wait
log "phase B done"
