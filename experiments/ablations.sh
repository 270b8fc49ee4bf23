#!/usr/bin/env bash
# The report's experiments on the long-CoT suite, over seeds 0 1 2, then the plots and tables
# of docs/ablations.md:
#   Fig. 5   held-out accuracy and response length rise together (the main job)
#   Fig. 9   curriculum vs uniform sampling
#   Fig. 10  mirror descent vs ReST (negative gradients), per iteration and per sampled token
#   sec. 2.3.3 length penalty with warm-up vs none
#   Fig. 7   long2short: long-CoT policy vs merge, shortest rejection sampling, DPO, RL
#   once     skip_zero_advantage off (seed 0)
# First the main job per seed, one at a time: its wall time is a result. Then the arms, JOBS
# at a time (default 2), each starting from the main job's SFT warm-up of its seed
# (runs/curriculum-seed<s>/sft/hf), so arms of a seed differ only in the RL stage; long2short
# starts from the main job's final policy. Re-running skips finished runs (summary.json).
# About 6 min per main job and 3-8 min per arm on an idle 2-core CPU: about 80 min in all.
#   bash experiments/ablations.sh [extra hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
JOBS=${JOBS:-2}
extra=""
if [ $# -gt 0 ]; then extra=$(printf ' %q' "$@"); fi

run() {  # run NAME_SEED_DIR ARGS...: one job unless its summary exists
  local dir=$1
  shift
  if [ -f "$dir/summary.json" ] || [ -f "$dir/long2short/results.json" ]; then return; fi
  echo "+ python -m experiments.run $*$extra"
  eval "python -m experiments.run $*$extra" >"$dir.log" 2>&1 || echo "FAILED: $dir (see $dir.log)"
}
export -f run
export extra

mkdir -p runs
for seed in $SEEDS; do
  run runs/curriculum-seed$seed +exp=curriculum trainer.seed=$seed
done

cmds=()
for seed in $SEEDS; do
  from="trainer.seed=$seed trainer.skip_sft=true trainer.init_from_hf=runs/curriculum-seed$seed/sft/hf"
  for exp in uniform rest length_penalty; do
    cmds+=("run runs/$exp-seed$seed +exp=$exp $from")
  done
  cmds+=("run runs/long2short-seed$seed +exp=long2short trainer.seed=$seed \
long2short.policy=runs/curriculum-seed$seed/final/hf")
done
cmds+=("run runs/keep_zero_adv-seed0 +exp=curriculum trainer.name=keep_zero_adv \
algo.skip_zero_advantage=false trainer.seed=0 trainer.skip_sft=true \
trainer.init_from_hf=runs/curriculum-seed0/sft/hf")
printf '%s\n' "${cmds[@]}" | xargs -P "$JOBS" -I{} bash -c "{}"

python -m experiments.report_ablations runs --out docs
