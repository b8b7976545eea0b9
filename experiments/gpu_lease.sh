#!/usr/bin/env bash
# One lease of a lent GPU, prepared (docs/accelerator.md): trains for a budget,
# then times Table 3 on the card, writing everything under $OUT.
#
#   bash experiments/gpu_lease.sh SECONDS RUNS [gpu_train.py flags]   # e.g. 380 m_scratch
#
# Run from the repository root on the device machine. Its image has jax, flax,
# optax, orbax, numpy, scipy, pillow, scikit-image and scikit-learn; carry the
# wheels of ml_collections and clu (pure Python) in .whl/ (the device tool's
# README says how). Budget: ~25 s to compile a gradnet_s step, ~90 s for two
# steps, ~60 s for the Table 3 timing; the command's limit is 600 s.
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
train_seconds=${1:-380}
runs=${2:-m_scratch}
shift $(($# < 2 ? $# : 2))
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
mkdir -p "$OUT/train"
# 3 files per run come back from $OUT/train, plus train.log and table3.md (8 at most).
timeout $((train_seconds + 200)) python3 experiments/gpu_train.py --runs="$runs" \
  --seconds="$train_seconds" --output_dir="$OUT/train" "$@" 2>&1 \
  | grep --line-buffered -v "^WARNING\|^I0000\|^W0000" | tee "$OUT/train.log"
timeout 120 python3 experiments/paper_tables.py table3 --runs=10 --output="$OUT/table3.md"
cat "$OUT/table3.md"
