#!/usr/bin/env bash
# The paper-chain study (experiments/paper_chain/): start or continue every unfinished run, from
# the repository root:  docs/results/paper_chain/run_study.sh
# 1. sweep: each head at three base rates, seed 0, test stage off; the rate with the lowest
#    best-epoch val error is written to sweep/HEAD/chosen_lr.txt (chosen on val only);
# 2. final: each head at its chosen rate, seeds 1..3 (not the sweep's seed), best.ckpt chosen on
#    val, tested once on the full t10k.
# Every run has a fixed folder and trainer.resume=auto, so the script can be stopped at any time
# (SIGTERM or Ctrl-C to its process group: the runs save, then exit) and simply run again; a
# finished run is skipped. JOBS runs at once (THREADS torch threads each).
set -u
cd "$(dirname "$0")/../../.."
D=${D:-docs/results/paper_chain}
HEADS=${HEADS:-"gmsop parametric_srsop srsop gap"}   # longest first
SEEDS=${SEEDS:-"1 2 3"}
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=${THREADS:-1} PYTHONWARNINGS=ignore
PY=${PY:-python}
COMMON="logger=no_wandb trainer.enable_progress_bar=false data.num_workers=0 trainer.resume=auto ${EXTRA:-}"
# Base rates (for a batch of 256) around each head's default; a head whose best rate was at the
# grid's top got the next doubling (SR-SOP: 0.8, 1.6, 3.2; parametric SR-SOP: 0.8, 1.6) until the best
# is inside the grid.
declare -A RATES=([gap]="0.05 0.1 0.2" [sop]="0.05 0.1 0.2" [srsop]="0.1 0.2 0.4 0.8 1.6 3.2" [parametric_srsop]="0.1 0.2 0.4 0.8 1.6"
                  [gmgap]="0.05 0.1 0.2" [gmsop]="0.025 0.05 0.1")
mkdir -p $D/logs
log() { echo "[$(date '+%F %T')] $*" | tee -a $D/logs/times.txt; }
stop() {  # forward to the whole group (a terminal or scheduler may have already), wait until every run saved
  trap "" TERM INT; log "stopping: every run saves"; kill -TERM 0
  while pgrep -g "$(ps -o pgid= $$ | tr -d ' ')" -f gmsop.train > /dev/null; do sleep 1; done
  log "stopped"; exit 143
}
trap stop TERM INT

# run NAME FOLDER DONE_FILE OVERRIDES...: one run, skipped when DONE_FILE exists, timed into the log
run() {
  local name=$1 folder=$2 done=$3; shift 3
  if [ -e "$folder/$done" ] && { [ "$done" != summary.json ] || grep -q '"status": "finished"' "$folder/summary.json"; }; then
    return 0
  fi
  local t=$(date +%s)
  mkdir -p $D/logs
  $PY -m gmsop.train "$@" hydra.run.dir=$folder $COMMON >> $D/logs/$name.log 2>&1
  local rc=$?
  log "$name exit $rc in $(( $(date +%s) - t )) s"
}
export -f run log; export D COMMON PY

pool() { xargs -P "$JOBS" -I{} bash -c '{}'; }  # one command per input line, JOBS at once

log "start: heads $HEADS, seeds $SEEDS, $JOBS jobs x $OMP_NUM_THREADS threads"
for h in $HEADS; do for lr in ${RATES[$h]}; do
  echo "run sweep_${h}_lr$lr $D/sweep/$h/lr$lr summary.json experiment=paper_chain/$h optim.lr=$lr seed=0 trainer.test=false"
done; done | pool &
wait $!
log "sweep done"

for h in $HEADS; do
  $PY - "$D/sweep/$h" > $D/sweep/$h/chosen_lr.txt <<'PYEOF' || { log "no chosen rate for $h"; exit 1; }
import json, sys
from pathlib import Path
scores = {}
for s in sorted(Path(sys.argv[1]).glob("lr*/summary.json")):
    d = json.loads(s.read_text())
    if d.get("status") != "finished":
        sys.exit(f"{s.parent} did not finish ({d.get('status')})")
    scores[d["learning_rate"]["base"]] = d["best"]["val/top1_err"]
best = min(scores, key=scores.get)
print(best)
print("chose", best, "from val errors", scores, file=sys.stderr)
PYEOF
  log "$h: chosen rate $(cat $D/sweep/$h/chosen_lr.txt)"
done

for s in $SEEDS; do for h in $HEADS; do
  echo "run final_${h}_seed$s $D/runs/${h}_seed$s test.json experiment=paper_chain/$h optim.lr=$(cat $D/sweep/$h/chosen_lr.txt) seed=$s"
done; done | pool &
wait $!
log "finals done"
find $D/sweep $D/runs -name checkpoints -type d -prune -exec rm -rf {} +
