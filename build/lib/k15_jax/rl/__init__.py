"""Policy-optimization math of k1.5 as pure JAX functions (derivation: docs/algorithm.md).

- losses: mirror-descent surrogate (sec. 2.3.2), policy gradient and ReST ablations (sec. 3.5),
  `LOSSES` by name and `LossConfig`.
- penalties: length penalty and its warm-up schedule (sec. 2.3.3).
- long2short: DPO pairs and loss (sec. 2.4).
"""
