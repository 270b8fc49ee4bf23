#!/usr/bin/env bash
# The report's two ablations over 3 seeds, then the comparison plots and table:
#   curriculum vs uniform sampling (Fig. 9), mirror descent vs ReST (Fig. 10).
# About 12 min per run on a 2-core CPU: 9 runs, about 2 hours. Re-running resumes.
#   bash experiments/ablations.sh [extra hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
for seed in 0 1 2; do
  for exp in curriculum uniform rest; do
    python -m experiments.run +exp=$exp trainer.seed=$seed "$@"
  done
done
python -m experiments.compare runs/curriculum-seed{0,1,2} runs/uniform-seed{0,1,2} \
  --out runs/comparison-sampling
python -m experiments.compare runs/curriculum-seed{0,1,2} runs/rest-seed{0,1,2} \
  --out runs/comparison-rest
