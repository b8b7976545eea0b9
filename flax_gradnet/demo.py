"""The main job of `make demo`: train, evaluate and deblur, all on the built-in data.

    python -m flax_gradnet.demo --workdir=demo_workdir [--config=configs/quickstart.py]

1. trains `configs/quickstart.py` on synthetic motion blur over the photographs
   scikit-image and scikit-learn ship (resuming if the workdir has a checkpoint);
2. deblurs every held-out pair (photographs never seen in training) and prints
   PSNR/SSIM of the blurry inputs beside the deblurred outputs;
3. deblurs scikit-image's real motion-blurred photograph `clock_motion.png`
   into a side-by-side picture;
4. leaves TensorBoard logs, checkpoints and the pictures in the workdir.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from flax_gradnet import checkpoint as ckpt_lib
from flax_gradnet import image_io, inference, metrics, train
from flax_gradnet.data import pipeline

_DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "demo_workdir", "Where checkpoints, logs and pictures go.")
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Training configuration file.")


def clock_motion_path() -> str:
  import skimage  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(skimage.__file__), "data", "clock_motion.png")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} missing: scikit-image ships clock_motion.png with its data")
  return path


def evaluate_heldout(config, workdir: str) -> list[dict]:
  """Per-image PSNR/SSIM (uint8, RGB, no crop) of blurry and deblurred held-out pairs."""
  model, params, _ = ckpt_lib.restore_generator(workdir)
  fn = inference.make_deblur_fn(model, params)
  source = train._source(config, "test", for_eval=True)  # pylint: disable=protected-access
  out_dir = os.path.join(workdir, "deblurred")
  rows = []
  for example in pipeline.eval_iterator(source):
    blur, sharp, name = example["blur"], example["sharp"], example["name"]
    out = inference.deblur_image(fn, blur)
    safe = name.replace("/", "_").rsplit(".", 1)[0]
    image_io.write_image(os.path.join(out_dir, f"{safe}.png"),
                         np.concatenate([blur, out, sharp], axis=1), overwrite=True)
    rows.append({
        "name": name,
        "blurry_psnr": float(metrics.psnr(blur, sharp)),
        "psnr": float(metrics.psnr(out, sharp)),
        "blurry_ssim": float(metrics.ssim(blur, sharp)),
        "ssim": float(metrics.ssim(out, sharp)),
    })
  return rows


def deblur_clock(workdir: str) -> str:
  model, params, _ = ckpt_lib.restore_generator(workdir)
  fn = inference.make_deblur_fn(model, params)
  blur = image_io.read_image(clock_motion_path())
  out = inference.deblur_image(fn, blur)
  path = os.path.join(workdir, "clock_motion_blurry_vs_deblurred.png")
  image_io.write_image(path, np.concatenate([blur, out], axis=1), overwrite=True)
  return path


def main(argv):
  del argv
  config, workdir = FLAGS.config, FLAGS.workdir
  start = time.time()
  train.train_and_evaluate(config, workdir)
  logging.info("Training finished after %.1f min.", (time.time() - start) / 60)

  rows = evaluate_heldout(config, workdir)
  clock = deblur_clock(workdir)
  lines = ["", "Held-out photographs (never seen in training), synthetic motion blur.",
           metrics.protocol_string(False, 0),
           f"{'image':<28} {'blurry PSNR':>11} {'deblurred':>10} {'blurry SSIM':>11} {'deblurred':>10}"]
  for r in rows:
    lines.append(f"{r['name']:<28} {r['blurry_psnr']:11.2f} {r['psnr']:10.2f} "
                 f"{r['blurry_ssim']:11.4f} {r['ssim']:10.4f}")
  mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "name"}
  lines += [f"{'mean of ' + str(len(rows)) + ' images':<28} {mean['blurry_psnr']:11.2f} "
            f"{mean['psnr']:10.2f} {mean['blurry_ssim']:11.4f} {mean['ssim']:10.4f}",
            f"PSNR gain over the blurry input: {mean['psnr'] - mean['blurry_psnr']:+.2f} dB; "
            f"SSIM gain: {mean['ssim'] - mean['blurry_ssim']:+.4f}",
            f"Deblurred held-out images (blurry | deblurred | sharp): {workdir}/deblurred/",
            f"Real motion blur (scikit-image clock_motion.png), blurry | deblurred: {clock}",
            f"TensorBoard: tensorboard --logdir {workdir}",
            f"Total time: {(time.time() - start) / 60:.1f} min"]
  print("\n".join(lines), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
