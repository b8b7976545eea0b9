#!/usr/bin/env bash
# Three runs of experiments/gpu_blind.py side by side on one lent GPU (docs/models.md,
# "Blind training at accelerator scale"): the small net at 1/4 of the resolution, a
# larger net at 1/4, a mid-sized net at 1/2. Each trains for SECONDS_BUDGET seconds
# after its compilation; what comes back is OUT/{a,b,c}/{log.jsonl,params.msgpack},
# OUT/device.txt (the GPU's name, jax's devices) and OUT/console.txt.
#
#   python experiments/gpu_blind.py prepare --out=.gpu/builtin.npz
#   bash experiments/fetch_photos.sh .gpu/photos
#   OUT=results bash experiments/gpu_blind_runs.sh
#
# Settings: OUT (required), SECONDS_BUDGET [380], PYTHON [python3], EXTRA (arguments
# added to every run, e.g. a CPU smoke test's "--batch=2 --steps_per_call=1").
# .gpu/ and .whl/ (docs/accelerator.md) travel with the repository (ignored by git).
set -uo pipefail
out="${OUT:?set OUT}"
seconds="${SECONDS_BUDGET:-380}"
py="${PYTHON:-python3}"
extra=(${EXTRA:-})
mkdir -p "$out"
if ! "$py" -c "import ml_collections, dm_pix" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --target /tmp/gpu_blind_site .whl/*.whl
  export PYTHONPATH="/tmp/gpu_blind_site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
{ date -u +%Y-%m-%dT%H:%M:%SZ; nvidia-smi -L 2>/dev/null || true
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$out/device.txt" 2>&1
cat "$out/device.txt"
common=(--builtin=.gpu/builtin.npz --photo_dir=.gpu/photos --seconds="$seconds" --eval_every=60)
run() {  # name, then its arguments
  local name="$1"; shift
  timeout "$((seconds + 200))" "$py" experiments/gpu_blind.py train "${common[@]}" --out="$out/$name" \
    "$@" "${extra[@]}" > "/tmp/gpu_blind_$name.txt" 2>&1
  echo "run $name exit status $?" >> "/tmp/gpu_blind_$name.txt"
}
run a --down=4 --extent 6.25 15 --kernel_size=25 --batch=256 --crop=48 &
run b --down=4 --extent 6.25 15 --kernel_size=25 --batch=128 --crop=64 \
  --model_options='{"num_levels": 3, "base_features": 32, "gradientnet_features": 64, "num_mbrbs": 6}' &
run c --down=2 --extent 12.5 30 --kernel_size=45 --batch=64 --crop=96 \
  --model_options='{"num_levels": 3, "base_features": 24, "gradientnet_features": 48, "num_mbrbs": 4}' &
wait
for name in a b c; do echo "== $name"; cat "/tmp/gpu_blind_$name.txt"; done > "$out/console.txt"
for name in a b c; do echo "== $name"; grep -v '^{"args"' "/tmp/gpu_blind_$name.txt" | tail -n 12; done
