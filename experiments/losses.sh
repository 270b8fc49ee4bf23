#!/usr/bin/env bash
# k1.5's mirror descent (+exp=curriculum) against GRPO, DAPO, GSPO and CISPO, 3 seeds, then
# partial rollouts under each off-policy option, then the plots and tables of docs/losses.md.
# Per seed, one SFT warm-up (runs/losses/sft-seed<s>) is exported and shared by every arm, so
# the arms of a seed start from identical params and differ only in the RL stage.
#   bash experiments/losses.sh [extra hydra overrides]       (JOBS=2: two runs at a time)
# docs/losses.md was made with: JOBS=3 STAGES=main, then JOBS=2 STAGES=partial
# PARTIAL_ARMS=curriculum (per seed), then PARTIAL_ARMS=grpo OPTIONS="exclude_old tis", all with
# the override trainer.iterations=30, then
# STAGES=compare.
# Stages (STAGES="main partial compare" by default):
#   main     5 arms x 3 seeds at the main job's settings (60 iterations of 16 prompts x 8)
#   partial  rollout.partial=true, rollout.budget_tokens=32 (of 64: every answer longer than
#            32 tokens spans two iterations), algo.off_policy in {exclude_old, none, tis,
#            mask}, for PARTIAL_ARMS (default: mirror descent and GRPO) x 3 seeds
#   compare  experiments.losses_reeval (re-scores start and end), then experiments.losses_report
#            (docs/img/losses-*.png and the tables of docs/losses.md)
# Re-running resumes: finished runs are skipped by their own checkpoints.
# SUITE (default arithmetic, what docs/losses.md measured): a configs/exp preset composed
# before each arm's, e.g. SUITE=curriculum for the long-CoT main job's suite.
set -euo pipefail
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/losses}
SEEDS=${SEEDS:-"0 1 2"}
ARMS=${ARMS:-"curriculum grpo dapo gspo cispo"}
PARTIAL_ARMS=${PARTIAL_ARMS:-"curriculum grpo"}
OPTIONS=${OPTIONS:-"exclude_old none tis mask"}
STAGES=${STAGES:-"main partial compare"}
JOBS=${JOBS:-1}
SUITE=${SUITE:-arithmetic}
extra=("$@")

run() {  # one line per run: <exp> <seed> <name> [overrides...]
  local exp=$1 seed=$2 name=$3
  shift 3
  echo "$PYTHON -m experiments.run '+exp=[$SUITE,$exp]' trainer.seed=$seed trainer.name=$name" \
    "trainer.skip_sft=true trainer.init_from_hf=$OUT/sft-seed$seed/final/hf" \
    "trainer.run_dir=$OUT/$name-seed$seed $* ${extra[*]:-} > $OUT/$name-seed$seed.log 2>&1"
}

mkdir -p "$OUT"
for seed in $SEEDS; do  # a finished SFT is kept as it is (running arms may be reading it)
  [[ -f "$OUT/sft-seed$seed/summary.json" ]] && continue
  "$PYTHON" -m experiments.run "+exp=[$SUITE,curriculum]" trainer.name=sft trainer.iterations=0 \
    trainer.seed="$seed" trainer.run_dir="$OUT/sft-seed$seed" "${extra[@]}" \
    > "$OUT/sft-seed$seed.log" 2>&1
done
{
  if [[ " $STAGES " == *" main "* ]]; then
    for seed in $SEEDS; do
      for exp in $ARMS; do run "$exp" "$seed" "$exp"; done
    done
  fi
  if [[ " $STAGES " == *" partial "* ]]; then
    for seed in $SEEDS; do
      for exp in $PARTIAL_ARMS; do
        for op in $OPTIONS; do
          run "$exp" "$seed" "$exp-partial-$op" rollout.partial=true rollout.budget_tokens=32 \
            algo.off_policy="$op"
        done
      done
    done
  fi
} | xargs -P "$JOBS" -I{} bash -c "{}"

if [[ " $STAGES " == *" compare "* ]]; then
  "$PYTHON" -m experiments.losses_reeval --runs "$OUT"  # start/end with a generous verifier limit
  "$PYTHON" -m experiments.losses_report --runs "$OUT" --out docs
fi
