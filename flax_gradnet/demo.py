"""The main job of `make demo`: train, then compare with the shipped model on unseen blur.

    python -m flax_gradnet.demo --workdir=demo_workdir [--config=configs/quickstart.py]
    python -m flax_gradnet.demo --workdir=W --config.num_train_steps=200   # a shorter run

1. trains `configs/quickstart.py` (resuming if the workdir has a checkpoint);
2. deblurs the held-out set (`data.online.heldout_pairs()`: photographs no
   training record uses, each blurred whole by every blur family, with sensor
   noise) with the model just trained ("quickstart") and with the model shipped
   in the package (`inference.restore()`, "shipped"; left out, with a line saying
   so, when none is shipped), and measures both against the blurry input;
3. prints a per-family table (PSNR and its gain over the blurry input, SSIM),
   the row of all images, and each model's worst per-image PSNR gain;
4. writes into the workdir
     heldout/<photo>_<family>.png   blurry | quickstart | shipped | sharp
     clock_motion_comparison.png    blurry | quickstart | shipped, on scikit-image's
                                    real motion-blurred photograph clock_motion.png
     heldout_results.json           per-image and per-family numbers, protocol, models
   beside the training run's checkpoints and TensorBoard logs.

Like `flax_gradnet.main`, it holds the workdir's lock (`workdir.WorkdirLock`)
from start to end: a second run on the same workdir exits 2 at once.

Metrics: `metrics.psnr`/`ssim` on the uint8 outputs, RGB, no border crop. Every
model deblurs as `deblur` does by default, whole images under its own recorded
inference options (`inference.Options`): the shipped model under those in its
config.json, the quickstart under its config's `inference` field (the paper's
protocol, one pass and the generator's output as it is, when it records none).
The report states each model's options.

absl flags, as in `flax_gradnet.main` (and for its reason: `--config.<field>=value`
overrides of an ml_collections config exist for absl only); `--help` and the
exit statuses follow `flax_gradnet.cli`: a config that does not load, an
unknown `--config.` field or a workdir that cannot be trained in exit 2 before
anything is written. Console script: `flax-gradnet-demo`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, NamedTuple, Sequence

import numpy as np
# TensorFlow (imported by clu's writers, which only write summaries) logs C++
# INFO lines to the terminal otherwise; its oneDNN kernels are never used here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

import configs.quickstart
# numpy/Pillow/stdlib only at import: --help and flag errors stay instant; jax
# comes with the modules imported in the functions below.
from flax_gradnet import cli, evaluation, image_io
from flax_gradnet.atomic import atomic_write_text

# The installed configs package's file, so the default works from any directory.
_DEFAULT_CONFIG = configs.quickstart.__file__

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "demo_workdir", "Where checkpoints, logs and pictures go.")
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Training configuration file.")

HELDOUT_DIR = "heldout"
CLOCK_FILE = "clock_motion_comparison.png"
RESULTS_FILE = "heldout_results.json"
ALL = evaluation.FAMILY_ALL  # the row of all images in `family_table`
QUICKSTART, SHIPPED = "quickstart", "shipped"  # model keys of the rows and the table


def clock_motion_path() -> str:
  import skimage  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(skimage.__file__), "data", "clock_motion.png")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} missing: scikit-image ships clock_motion.png with its data")
  return path


# ----------------------------------------------------------------------------
# The numbers: pure functions of the per-image rows.


def family_table(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, dict]:
  """Per-image rows -> per-family means, families in first-seen order, then `ALL`.

  Each model's numbers are `evaluation.family_means` of its own rows, the same
  computation as `python -m flax_gradnet.evaluate`'s per-family table.

  Args:
    rows: one dict per image: 'name', 'family', 'blurry_psnr', 'blurry_ssim',
      and '<model>_psnr', '<model>_ssim' for each model.
    models: the model keys (e.g. ("quickstart", "shipped")).

  Returns:
    {family: {'num_images', 'blurry': {'psnr', 'ssim'},
              <model>: {'psnr', 'ssim', 'psnr_gain', 'worst_psnr_gain', 'worst_image'}}}
    with means over the family's images; `psnr_gain` = mean PSNR - mean blurry
    PSNR; `worst_psnr_gain` = the smallest per-image PSNR - blurry PSNR, of
    image `worst_image`.
  """
  if not models:
    raise ValueError("family_table needs at least one model")
  per_model = {m: evaluation.family_means(
      [{"name": r["name"], "family": r["family"], "psnr": r[f"{m}_psnr"],
        "ssim": r[f"{m}_ssim"], "blurry_psnr": r["blurry_psnr"],
        "blurry_ssim": r["blurry_ssim"]} for r in rows]) for m in models}
  keys = ("psnr", "ssim", "psnr_gain", "worst_psnr_gain", "worst_image")
  return {family: {"num_images": b["num_images"],
                   "blurry": {"psnr": b["blurry_psnr"], "ssim": b["blurry_ssim"]},
                   **{m: {k: per_model[m][family][k] for k in keys} for m in models}}
          for family, b in per_model[models[0]].items()}


def format_table(table: dict[str, dict], models: Sequence[str]) -> list[str]:
  """`family_table`'s dict -> the lines printed: one row per family, the all
  row, then each model's worst per-image PSNR gain."""
  w = 15
  top = f"{'':<9} {'':>3} {'blurry':>7} " + "".join(f"{m:>{w}} " for m in models)
  top += f"{'blurry':>7} " + "".join(f"{m:>{w - 4}} " for m in models)
  head = f"{'family':<9} {'n':>3} {'PSNR':>7} " + "".join(f"{'PSNR (gain)':>{w}} " for _ in models)
  head += f"{'SSIM':>7} " + "".join(f"{'SSIM':>{w - 4}} " for _ in models)
  lines = [top.rstrip(), head.rstrip()]
  for family, e in table.items():
    if family == ALL:
      lines.append("-" * len(lines[-1]))
    cells = [f"{family:<9} {e['num_images']:>3d} {e['blurry']['psnr']:7.2f}"]
    cells += [f"{e[m]['psnr']:6.2f} ({e[m]['psnr_gain']:+5.2f})".rjust(w) for m in models]
    cells += [f"{e['blurry']['ssim']:7.4f}"] + [f"{e[m]['ssim']:{w - 4}.4f}" for m in models]
    lines.append(" ".join(cells))
  if ALL in table:
    worst = [f"{m} {table[ALL][m]['worst_psnr_gain']:+.2f} dB ({table[ALL][m]['worst_image']})"
             for m in models]
    lines.append("Worst per-image PSNR gain: " + "; ".join(worst))
  return lines


# ----------------------------------------------------------------------------
# The models and the pictures.


class Net(NamedTuple):
  """A model of the comparison: its generator, parameters, the inference
  options it is deblurred with (`Restored.options`: its recorded ones) and a
  description."""
  module: Any
  params: Any
  options: Any
  description: str


def _load_shipped() -> tuple[str | None, Net | None, str]:
  """(name, `Net`, description) of the shipped model the demo compares with
  (`inference.restore`, with its recorded inference options; users call that
  directly); name and Net None when there is none or it cannot be loaded (the
  description says why)."""
  try:
    from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, None, "No shipped model found (no flax_gradnet.pretrained package)"
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  names = pretrained.available()
  if not names:
    root = os.environ.get(pretrained.ENV_VAR) or pretrained.PACKAGE_DIR
    return None, None, f"No shipped model found (none in {root})"
  name = pretrained.DEFAULT_MODEL if pretrained.DEFAULT_MODEL in names else names[0]
  try:
    module, params, restored = inference.restore(model=name)
  except (FileNotFoundError, ValueError) as e:
    return None, None, f"The shipped model {name!r} could not be loaded ({e})"
  desc = f"{name}" + (f", step {restored.step}" if restored.step is not None else "")
  return name, Net(module, params, restored.options, f"pretrained model {desc}"), desc


def evaluate_heldout(nets: dict[str, Net], workdir: str) -> list[dict[str, Any]]:
  """Deblurs and measures every held-out pair with each of `nets` ({model key:
  `Net`}; `evaluation.evaluate_examples` under each net's own options, RGB, no
  crop); writes heldout/<photo>_<family>.png (blurry | each model | sharp) and
  returns the per-image rows ('name', 'photo', 'family', 'blurry_psnr',
  'blurry_ssim', '<key>_psnr', '<key>_ssim')."""
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  examples = online.heldout_pairs()
  outputs: dict[str, list[np.ndarray]] = {ex["name"]: [] for ex in examples}
  measured = {key: evaluation.evaluate_examples(
      net.module, net.params, net.options, examples,
      on_image=lambda ex, out, row: outputs[ex["name"]].append(out)).rows
              for key, net in nets.items()}
  rows = []
  for i, ex in enumerate(examples):
    # The blurry input's numbers are the same in every model's rows.
    first = measured[next(iter(nets))][i]
    row: dict[str, Any] = {"name": ex["name"], "photo": ex["sequence"], "family": ex["family"],
                           "blurry_psnr": first["blurry_psnr"],
                           "blurry_ssim": first["blurry_ssim"]}
    for key in nets:
      row[f"{key}_psnr"], row[f"{key}_ssim"] = measured[key][i]["psnr"], measured[key][i]["ssim"]
    # As RGB: a grayscale model's output (model.channels=1) beside the RGB ones.
    panels = [image_io.to_channels(p, 3) for p in (ex["blur"], *outputs[ex["name"]], ex["sharp"])]
    image_io.write_image(os.path.join(workdir, HELDOUT_DIR, f"{ex['sequence']}_{ex['family']}.png"),
                         np.concatenate(panels, axis=1), overwrite=True)
    rows.append(row)
  return rows


def deblur_clock(nets: dict[str, Net], workdir: str) -> str:
  """blurry | each net's output (under its options) of scikit-image's
  clock_motion.png, written to the workdir; returns the path."""
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  blur = image_io.read_image(clock_motion_path())
  panels = [blur] + [image_io.to_channels(inference.deblur_image(
      inference.deblur_fn_for(net.module, net.params, net.options), blur), 3)
                     for net in nets.values()]
  path = os.path.join(workdir, CLOCK_FILE)
  image_io.write_image(path, np.concatenate(panels, axis=1), overwrite=True)
  return path


def train_quickstart(config: Any, workdir: str) -> None:
  """Trains `config` in `workdir` (resuming). A config or workdir that cannot
  be trained prints one `error:` line and exits 2 before anything is written."""
  from flax_gradnet import config_checks, stopping, train  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # library INFO waits for the workdir's log file
  try:
    config_checks.preflight(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    cli.exit_error(str(e))
  train.log_to_workdir(workdir, "demo")
  logging.set_verbosity(logging.INFO)
  print(f"Training the quickstart in {workdir} ({config.num_train_steps} steps; library logs: "
        f"{workdir}/demo.INFO)", flush=True)
  try:
    train.train_and_evaluate(config, workdir, progress=True)
  except stopping.Preempted as e:  # saved; `make demo` again resumes
    print(f"\n{e}", file=sys.stderr, flush=True)
    sys.exit(stopping.PREEMPTED_EXIT_STATUS)


def main(argv):
  del argv  # `_parse_flags` refuses positional arguments
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  if workdir_lib.is_remote(FLAGS.workdir):  # never made "absolute" as a local path
    cli.exit_error(f"--workdir {FLAGS.workdir} is a URI: the demo writes its pictures and "
                   "numbers with local file operations; give a local folder")
  workdir = str(workdir_lib.workdir_path(FLAGS.workdir))  # ~ expanded, absolute
  with cli.holding_lock(workdir_lib.WorkdirLock(workdir)):  # as main's: one run per workdir
    _train_and_compare(config, workdir)


def _train_and_compare(config: Any, workdir: str) -> None:
  """Steps 1-4 of the module docstring (the workdir's lock is held)."""
  # pylint: disable=g-import-not-at-top
  from flax_gradnet import inference, metrics
  from flax_gradnet.data import online
  # pylint: enable=g-import-not-at-top
  start = time.time()
  train_quickstart(config, workdir)
  train_s = time.time() - start
  logging.info("Training finished after %.1f min.", train_s / 60)

  model, params, restored = inference.restore(workdir)
  nets = {QUICKSTART: Net(model, params, restored.options,
                          f"the model trained in {workdir}, step {restored.step}")}
  shipped, shipped_net, shipped_desc = _load_shipped()
  if shipped_net is not None:
    nets[SHIPPED] = shipped_net

  logging.info("Deblurring the held-out set with %s.", ", ".join(nets))
  eval_start = time.time()
  rows = evaluate_heldout(nets, workdir)
  table = family_table(rows, list(nets))
  clock = deblur_clock(nets, workdir)
  eval_s = time.time() - eval_start
  metric_protocol = metrics.protocol_string(False, 0)
  models = {k: net.description for k, net in nets.items()}
  photos = ", ".join(online.HELDOUT_PHOTOS)

  results = {
      "protocol": metric_protocol,
      # Each model's inference options (its own recorded ones) and their words.
      "inference": {k: net.options.to_dict() for k, net in nets.items()},
      "inference_protocol": {k: net.options.describe() for k, net in nets.items()},
      "heldout_set": (f"data/online.py heldout_pairs() v{online.HELDOUT_VERSION}: {photos} x "
                      f"{len(table) - 1} blur families, sensor noise, seed {online.HELDOUT_SEED}"),
      "models": models,
      "shipped_model": shipped,
      "shipped_note": None if shipped is not None else shipped_desc,
      "by_family": table,
      "per_image": rows,
      "pictures": {"heldout": HELDOUT_DIR, "clock_motion": CLOCK_FILE},
      "seconds": {"train": train_s, "evaluate": eval_s, "total": time.time() - start},
  }
  atomic_write_text(os.path.join(workdir, RESULTS_FILE),
                    json.dumps(evaluation.json_safe(results), indent=2) + "\n")

  panels = "blurry | quickstart" + (" | shipped" if shipped is not None else "")
  lines = ["", f"Held-out set: {len(rows)} images ({photos}: photographs no training record "
               f"uses) x {len(table) - 1} blur families, with sensor noise.",
           metric_protocol,
           f"quickstart = {models[QUICKSTART]}",
           f"             inference: {nets[QUICKSTART].options.describe()}"]
  if shipped is not None:
    lines += [f"shipped    = {models[SHIPPED]}",
              f"             inference: {nets[SHIPPED].options.describe()}"]
  else:
    lines.append(f"{shipped_desc}: comparing the blurry input with quickstart only.")
  lines += ["", "PSNR in dB; (gain) = over the blurry input."]
  lines += format_table(table, list(nets))
  lines += ["",
            f"Held-out pictures ({panels} | sharp): {os.path.join(workdir, HELDOUT_DIR)}/",
            f"Real motion blur (scikit-image clock_motion.png), {panels}: {clock}",
            f"Numbers: {os.path.join(workdir, RESULTS_FILE)}",
            f"TensorBoard: tensorboard --logdir {workdir}",
            f"Total time: {(time.time() - start) / 60:.1f} min (training {train_s / 60:.1f} min)"]
  print("\n".join(lines), flush=True)


_parse_flags = functools.partial(cli.parse_absl_flags, prog="python -m flax_gradnet.demo",
                                 doc=__doc__, flag_names=("workdir", "config"))


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
