"""experiments/gpu_train.py: the wall-clock trainer for a lent accelerator."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import serialization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Imported by name from experiments/ (on sys.path): its data workers are spawned
# processes, which find the worker function by its module's name.
sys.path.insert(0, os.path.join(REPO, "experiments"))
gpu_train = importlib.import_module("gpu_train")


def test_lr_factor_warmup_then_cosine():
  f = gpu_train._lr_factor  # pylint: disable=protected-access
  assert f(0.0, 0.1) == 0.0
  assert f(0.05, 0.1) == pytest.approx(0.5)
  assert f(0.1, 0.1) == pytest.approx(1.0)
  assert f(0.55, 0.1) == pytest.approx(0.5)  # half way through the cosine: cos(pi/2)
  assert f(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
  assert f(0.25, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_random_crops_pair_the_same_window_and_transform():
  rng = np.random.default_rng(0)
  sharp = rng.integers(0, 256, (5, 20, 20, 3), dtype=np.uint8)
  blur = 255 - sharp  # a pixelwise function of sharp: a shared transform keeps it
  out = gpu_train.random_crops(blur, sharp, np.random.default_rng(1), 16, 8)
  assert out["blur"].shape == out["sharp"].shape == (16, 8, 8, 3)
  np.testing.assert_array_equal(out["blur"], 255 - out["sharp"])
  # Every crop is one of the 8 flips/rotations of some 8x8 window of some record.
  for crop in out["sharp"]:
    found = False
    for r in range(5):
      for t in range(13):
        for l in range(13):
          window = sharp[r, t:t + 8, l:l + 8]
          for k in range(4):
            w = np.rot90(window, k)
            if np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]):
              found = True
    assert found


def test_generators_import_without_grain_or_tfds():
  # The lent accelerator has neither: the synthetic generators must not need them.
  code = ("import sys\n"
          "for m in ('grain', 'tensorflow_datasets', 'array_record', 'tensorflow'):\n"
          "  sys.modules[m] = None\n"
          "from flax_gradnet.data import online, unseen\n"
          "print(online.OnlinePairs(size=16)[0]['blur'].shape)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert "(16, 16, 3)" in result.stdout


def test_refuses_unknown_runs_and_small_sources(tmp_path):
  with pytest.raises(SystemExit):
    gpu_train.main(["--runs=nope", f"--output_dir={tmp_path}"])
  with pytest.raises(SystemExit):
    gpu_train.main(["--runs=tiny", "--source_size=16", f"--output_dir={tmp_path}"])


def test_tiny_run_writes_weights_and_record(tmp_path):
  """A 2-second CPU run: its files, then packed by gpu_import and loaded as a model."""
  out = tmp_path / "out"
  assert gpu_train.main(["--runs=tiny", "--seconds=2", "--source_size=40", "--buffer=32",
                         "--workers=1", "--min_records=8", "--log_every=1",
                         f"--output_dir={out}"]) == 0
  record = json.loads((out / "tiny.json").read_text())
  assert record["steps"] > 0
  assert record["config"]["model"]["base_features"] == 8
  assert record["config"]["num_train_steps"] == record["steps"]
  assert record["history"] and record["history"][-1]["step"] <= record["steps"]
  from flax_gradnet.models import generator_from_config  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  module = generator_from_config(ml_collections.ConfigDict(record["config"]))
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 16, 16, 3), np.float32))["params"]
  for weights in ("raw", "ema"):
    params = serialization.msgpack_restore((out / f"tiny_{weights}.msgpack").read_bytes())
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(expected)):
      assert got.shape == want.shape and np.isfinite(got).all()

  gpu_import = importlib.import_module("gpu_import")
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  root = tmp_path / "models"
  assert gpu_import.main([str(out / "tiny.json"), "--weights=ema", "--name=tiny_gpu",
                          f"--root={root}"]) == 0
  loaded, loaded_params = pretrained.load("tiny_gpu", root=str(root))
  meta = pretrained.read_metadata("tiny_gpu", root=str(root))
  assert meta["step"] == record["steps"] and meta["weights"] == "ema"
  assert meta["source"] == str(out / "tiny.json")
  ema = serialization.msgpack_restore((out / "tiny_ema.msgpack").read_bytes())
  for got, want in zip(jax.tree_util.tree_leaves(loaded_params), jax.tree_util.tree_leaves(ema)):
    np.testing.assert_array_equal(np.asarray(got), want)
  image, reference = pretrained.reference_pair("tiny_gpu", root=str(root))
  np.testing.assert_allclose(pretrained.reference_output(loaded, loaded_params, image), reference,
                             atol=1e-6)
  # A name taken, a tree that does not fit, a missing run: refused, nothing written.
  with pytest.raises(FileExistsError):
    gpu_import.main([str(out / "tiny.json"), "--name=tiny_gpu", f"--root={root}"])
  bad = dict(record["config"])
  bad["model"] = dict(bad["model"], base_features=16)
  with pytest.raises(ValueError, match="does not fit|missing|shape"):
    pretrained.pack_params(ema, bad, "bad", source="test", step=1, root=str(root))
  assert not (root / "bad").exists()
  assert gpu_import.main([str(tmp_path / "none.json"), "--name=x", f"--root={root}"]) == 2
