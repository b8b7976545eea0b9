"""experiments/accelerator_run.sh end to end on the CPU: the tiny config trained from
scratch for a few steps, two pairs of one held-out set evaluated, the generator packed, and the
machine recorded, all under OUT (the one prepared script for a lent accelerator)."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "accelerator_run.sh"


def _run(out, **settings):
  env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, JAX_PLATFORMS="cpu",
             **{k: str(v) for k, v in settings.items()})
  return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_script_trains_evaluates_packs_and_records_the_machine(tmp_path):
  out = tmp_path / "out"
  r = _run(out, CONFIG="tests/tiny_config.py:online", BUDGET_S=300, STEPS=3, BATCH=2,
           WORKERS=0, DATASETS="synthetic_online", EVAL_IMAGES=2)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  device = (out / "device.txt").read_text().splitlines()
  assert device[1].startswith("cpu: ") and "logical cores visible" in device[1]
  assert device[2].startswith("jax ")
  assert (out / "command.txt").read_text().startswith(f"{sys.executable} -m flax_gradnet.main ")
  train = (out / "train.txt").read_text()
  assert "training exit status 0" in train
  assert "3/3" in train  # the progress bar's last state is kept, its other states not
  assert train.count("training: ") == 1
  summary = json.loads((out / "eval_synthetic_online" / "summary.json").read_text())
  assert summary["num_images"] == 2 and summary["step"] == 3
  assert not (out / "eval_synthetic_online" / "deblurred").exists()  # --no-save_outputs
  meta = json.loads((out / "models" / "accelerator_run" / "metadata.json").read_text())
  assert meta["step"] == 3 and meta["machine"] == device[1]
  assert (out / "models" / "accelerator_run" / "params.msgpack").stat().st_size > 0


def test_script_refuses_to_run_without_out():
  env = {k: v for k, v in os.environ.items() if k != "OUT"}
  r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=60)
  assert r.returncode != 0
  assert "set OUT to the folder for the results" in r.stderr
