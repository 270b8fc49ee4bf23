#!/usr/bin/env bash
# The report's two ablations over 3 seeds, then the comparison plots and table:
#   curriculum vs uniform sampling (Fig. 9), mirror descent vs ReST (Fig. 10).
# Per seed, one SFT warm-up (runs/sft-seed<s>, trainer.iterations=0) is shared by the three
# arms, so they start from identical params and differ only in the RL stage.
# About 1 min per SFT and 5-8 min per RL run on an idle 2-core CPU: about 1 hour in all.
# Re-running resumes (finished runs are skipped by their own checkpoints).
#   bash experiments/ablations.sh [extra hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
for seed in 0 1 2; do
  python -m experiments.run +exp=curriculum trainer.name=sft trainer.iterations=0 \
    trainer.seed=$seed "$@"
  for exp in curriculum uniform rest; do
    python -m experiments.run +exp=$exp trainer.seed=$seed trainer.skip_sft=true \
      trainer.init_from_hf=runs/sft-seed$seed/final/hf "$@"
  done
done
python -m experiments.compare runs/curriculum-seed{0,1,2} runs/uniform-seed{0,1,2} \
  --out runs/comparison-sampling
python -m experiments.compare runs/curriculum-seed{0,1,2} runs/rest-seed{0,1,2} \
  --out runs/comparison-rest
