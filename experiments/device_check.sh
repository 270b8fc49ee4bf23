#!/usr/bin/env bash
# One GPU check in under 8 minutes; every figure goes into ONE JSON file.
#   bash experiments/device_check.sh [OUT.json]      (default: device_check.json)
# Parts, each under its own timeout so one hang cannot eat the budget; the JSON is rewritten
# after every part, so a killed run still leaves the parts it finished:
#   kernels    Pallas kernel tests compiled (interpret=None resolves to compiled on a GPU)
#   attention  experiments/bench_attention.py at 8k-32k against jax.nn.dot_product_attention
#              (xla and cudnn) plus decode-attention bandwidth vs a measured device copy
#   rollout    experiments/bench_rollout.py at the Qwen2.5-0.5B shape in bfloat16
#   train      experiments/bench_train.py: training-step MFU
# Schema: docs/performance.md ("device_check.json"). Exits non-zero at once, with a one-line
# reason, where there is no NVIDIA GPU or JAX cannot see it.
set -u
OUT=${1:-device_check.json}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
fail() { echo "device_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA GPU: nvidia-smi not found (run this on a GPU machine)"
nvidia-smi -L 2>/dev/null | grep -q GPU || fail "no NVIDIA GPU: nvidia-smi lists none"
timeout 60 python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null \
  || fail "JAX sees no GPU (install jax[cuda12]); nvidia-smi does"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# part NAME SECONDS CMD...: runs CMD under a timeout; stdout's last line (a JSON object, for
# the benches) and the status go to $TMP/NAME.*; then the JSON file is rebuilt
part() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "device_check: $name (limit ${limit}s)" >&2
  timeout --kill-after=10 "$limit" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"timed_out\": $([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)}" >"$TMP/$name.status"
  python experiments/device_check_merge.py "$TMP" "$OUT"
}

part kernels 100 python -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/test_flash_attention.py tests/test_decode_attention.py
part attention 110 python -m experiments.bench_attention --lengths 8192 16384 32768 --reps 5
part rollout 150 python -m experiments.bench_rollout --shape qwen2_5_0_5b --dtype bfloat16 \
  --skip hf --repeats 2 --iterations 2 --warmup 1 --long-prompts 4
part train 80 python -m experiments.bench_train --rounds 3 --no-torch

python - "$OUT" <<'PY'
import json, sys
parts = json.load(open(sys.argv[1]))["parts"]
bad = [n for n, p in parts.items() if p["rc"] != 0]
print(f"device_check: wrote {sys.argv[1]}; failed parts: {bad or 'none'}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
