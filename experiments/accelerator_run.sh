#!/usr/bin/env bash
# One prepared run for a machine lent for minutes (docs/accelerator.md): trains a
# config from scratch for a wall-clock budget, evaluates the result on the held-out
# sets, packs the generator, and writes everything a person needs to read back into
# one folder: the device's name, the training summary, the metrics, the model.
#
#   OUT=results bash experiments/accelerator_run.sh
#
# Settings (environment variables; defaults in brackets):
#   OUT         folder for the results (required; created)
#   CONFIG      config file [configs/gradnet_small.py]
#   BUDGET_S    training seconds, compilation included (config.train_seconds) [420]
#   STEPS       config.num_train_steps, the length of the cosine schedule: set it to
#               the steps the budget allows (a first run's stop warning says); it
#               includes the config's coarse warm-up (config.coarse_task.warmup_steps,
#               8,000 in gradnet_small) [28000]
#   BATCH       global batch [4]
#   WORKERS     grain worker processes making synthetic_online records [14]
#   COARSE_BATCH pairs a step of the coarse task (config.coarse_task, drawn on the
#               device with one grouped convolution; inert without one) [256]
#   PHOTO_DIR   more training photographs (experiments/fetch_photos.sh; copy them to
#               the machine, e.g. inside the repository under an ignored folder) [none]
#   DATASETS    held-out sets to evaluate [synthetic_strong synthetic_online]
#   EVAL_IMAGES evaluate only the first this many pairs of each set [all]
#   WORKDIR     training workdir; the same one again resumes [$OUT/workdir]
#   PYTHON      interpreter [python3]
# Where grain, clu or ml_collections is missing, the wheels in .whl/ (docs/accelerator.md)
# are installed first, without an index.
set -euo pipefail
out="${OUT:?set OUT to the folder for the results}"
config="${CONFIG:-configs/gradnet_small.py}"
budget="${BUDGET_S:-420}"
steps="${STEPS:-28000}"
batch="${BATCH:-4}"
workers="${WORKERS:-14}"
coarse_batch="${COARSE_BATCH:-256}"
photos="${PHOTO_DIR:-}"
datasets="${DATASETS:-synthetic_strong synthetic_online}"
eval_images="${EVAL_IMAGES:-}"
workdir="${WORKDIR:-$out/workdir}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! "$py" -c "import grain, clu, ml_collections" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --target /tmp/flax_gradnet_site .whl/*.whl
  export PYTHONPATH="/tmp/flax_gradnet_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# The machine, in one line, as the paper-table benchmarks name it: jax's first device
# (the GPU's kind; for a CPU its model and core count).
machine="$("$py" -c "import sys; sys.path.insert(0, 'experiments'); import paper_tables
print(paper_tables.device_description())")"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "$machine"
  "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

args=(--config="$config" --workdir="$workdir" --config.train_seconds="$budget"
      --config.num_train_steps="$steps" --config.batch_size="$batch"
      --config.worker_count="$workers" --config.coarse_task.batch="$coarse_batch"
      --config.coarse_task.blur=conv)
if [ -n "$photos" ]; then args+=(--config.dataset_options.photo_dir="$photos"); fi
echo "$py -m flax_gradnet.main ${args[*]}" > "$out/command.txt"
# The budget stops training; the rest of the timeout leaves room for the final
# evaluation and checkpoint. Of the progress bar, train.txt keeps the last state.
set +e
timeout "$((budget + 300))" "$py" -m flax_gradnet.main "${args[@]}" 2>&1 \
  | tr '\r' '\n' > "$out/train_raw.txt"
rc=${PIPESTATUS[0]}
set -e
{ grep -v '^training: ' "$out/train_raw.txt" || true
  grep '^training: ' "$out/train_raw.txt" | tail -n 1 || true; } > "$out/train.txt"
rm -f "$out/train_raw.txt"
tail -n 20 "$out/train.txt"
echo "training exit status $rc" | tee -a "$out/train.txt"

for ds in $datasets; do
  "$py" -m flax_gradnet.evaluate --workdir="$workdir" --dataset="$ds" \
    --output_dir="$out/eval_$ds" --no-save_outputs ${eval_images:+--num_images="$eval_images"} \
    > "$out/eval_$ds.txt" 2>&1 || echo "evaluate $ds failed"
  tail -n 12 "$out/eval_$ds.txt"
done
"$py" -m flax_gradnet.pretrained --workdir="$workdir" --name=accelerator_run \
  --root="$out/models" --overwrite \
  --metadata="machine=$machine" > "$out/pack.txt" 2>&1 \
  || echo "packing failed: $out/pack.txt"
exit "$rc"
