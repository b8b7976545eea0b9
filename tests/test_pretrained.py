"""Shipped models: packing, verifying, loading, the CLI, and the models actually shipped."""

import configparser
import fnmatch
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from flax import serialization, traverse_util

from flax_gradnet import inference, pretrained
from flax_gradnet.models import Generator
from flax_gradnet.pretrained import __main__ as pretrained_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, generator_workdir):
  """A workdir laid out as training writes it, holding a tiny generator at step 5."""
  wd = str(tmp_path_factory.mktemp("workdir"))
  params = jax.jit(Generator(**TINY).init)(jax.random.key(0, impl="rbg"),
                                           jnp.zeros((1, 16, 16, 3)))["params"]
  generator_workdir(wd, TINY, params, 5)
  return wd


@pytest.fixture(scope="module")
def packed(tmp_path_factory, workdir):
  """(root, folder): `workdir` packed as model 'tiny' into a fresh root."""
  root = str(tmp_path_factory.mktemp("models"))
  path = pretrained.pack(workdir, "tiny", root=root, metadata={"note": "a test model"})
  return root, path


def _copy(packed, tmp_path):
  """A private copy of the packed model's root, to damage."""
  root = str(tmp_path / "models")
  shutil.copytree(packed[0], root)
  return root, os.path.join(root, "tiny")


def _rewrite_params(path, params):
  """Replaces params.msgpack and updates checksums.json (a consistent but wrong model)."""
  with open(os.path.join(path, pretrained.PARAMS_FILE), "wb") as f:
    f.write(serialization.msgpack_serialize(params))
  sums = {f: pretrained.file_sha256(os.path.join(path, f)) for f in pretrained.CHECKSUMMED_FILES}
  with open(os.path.join(path, pretrained.CHECKSUMS_FILE), "w") as f:
    json.dump(sums, f)


def _check_reproduces_reference(name, root):
  module, params = pretrained.load(name, root=root, dtype=jnp.float32)
  image, expected = pretrained.reference_pair(name, root)
  got = inference.deblur_array(inference.make_deblur_fn(module, params), inference.to_float(image))
  assert got.dtype == np.float32 and got.shape == expected.shape == image.shape
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- pack


def test_pack_writes_the_layout(packed, workdir):
  root, path = packed
  assert path == os.path.join(root, "tiny")
  assert sorted(os.listdir(path)) == sorted(pretrained.MODEL_FILES)
  assert os.listdir(root) == ["tiny"]  # no temporary folders left
  assert pretrained.available(root) == ["tiny"]
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    assert open(os.path.join(path, "config.json"), "rb").read() == f.read()
  sums = json.load(open(os.path.join(path, "checksums.json")))
  assert set(sums) == {"params.msgpack", "config.json"}
  for f, digest in sums.items():
    assert pretrained.file_sha256(os.path.join(path, f)) == digest
  meta = pretrained.read_metadata("tiny", root)
  assert meta["step"] == 5 and meta["source_workdir"] == os.path.abspath(workdir)
  assert meta["note"] == "a test model" and "packed_at" in meta
  assert meta["params_bytes"] == os.path.getsize(os.path.join(path, "params.msgpack"))
  image, reference = pretrained.reference_pair("tiny", root)
  np.testing.assert_array_equal(image, skimage.data.chelsea()[100:148, 200:264])
  assert image.dtype == np.uint8 and reference.dtype == np.float32
  assert reference.shape == (48, 64, 3) and np.abs(reference).max() <= 1.0

  # The params are the checkpoint's generator params, float32, nothing else.
  raw = serialization.msgpack_restore(open(os.path.join(path, "params.msgpack"), "rb").read())
  _, want, _ = inference.restore(workdir)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), raw, want)
  assert {a.dtype for a in jax.tree_util.tree_leaves(raw)} == {np.dtype(np.float32)}


def test_load_reproduces_the_reference_output(packed, workdir):
  root, _ = packed
  _check_reproduces_reference("tiny", root)
  module, params = pretrained.load("tiny", root=root)
  want_module, want_params, _ = inference.restore(workdir)
  assert module == want_module  # built through the same config path
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, want_params)
  bf16, _ = pretrained.load("tiny", root=root, dtype=jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16


def test_pack_refuses_to_overwrite_and_never_leaves_half_a_model(packed, workdir, tmp_path,
                                                                monkeypatch):
  root, path = _copy(packed, tmp_path)
  before = pretrained.file_sha256(os.path.join(path, "metadata.json"))
  with pytest.raises(FileExistsError, match="tiny.*overwrite"):
    pretrained.pack(workdir, "tiny", root=root)
  assert pretrained.file_sha256(os.path.join(path, "metadata.json")) == before
  pretrained.pack(workdir, "tiny", root=root, overwrite=True, metadata={"note": "second"})
  assert pretrained.read_metadata("tiny", root)["note"] == "second"
  assert os.listdir(root) == ["tiny"]
  _check_reproduces_reference("tiny", root)

  # Failures leave nothing behind: too large, bad metadata, no checkpoint, bad name.
  monkeypatch.setattr(pretrained, "MAX_PARAMS_BYTES", 100)
  with pytest.raises(ValueError, match="MiB"):
    pretrained.pack(workdir, "big", root=root)
  monkeypatch.undo()
  with pytest.raises(ValueError, match="step"):
    pretrained.pack(workdir, "clash", root=root, metadata={"step": 1})
  with pytest.raises(FileNotFoundError, match="config.json"):
    pretrained.pack(str(tmp_path / "nowhere"), "none", root=root)
  with pytest.raises(ValueError, match="invalid model name"):
    pretrained.pack(workdir, "../escape", root=root)
  assert os.listdir(root) == ["tiny"]


# ---------------------------------------------------------------- verify / load errors


def test_flipped_byte_is_named(packed, tmp_path):
  root, path = _copy(packed, tmp_path)
  params_path = os.path.join(path, "params.msgpack")
  data = bytearray(open(params_path, "rb").read())
  data[len(data) // 2] ^= 0x01
  open(params_path, "wb").write(bytes(data))
  for fn in (pretrained.verify, pretrained.load):
    with pytest.raises(ValueError, match=r"params\.msgpack.*damaged"):
      fn("tiny", root=root)

  root, path = _copy(packed, tmp_path / "b")
  with open(os.path.join(path, "config.json"), "a") as f:
    f.write(" ")
  with pytest.raises(ValueError, match=r"config\.json.*damaged"):
    pretrained.load("tiny", root=root)


@pytest.mark.parametrize("missing", ["params.msgpack", "config.json", "checksums.json"])
def test_missing_file_is_named(packed, tmp_path, missing):
  root, path = _copy(packed, tmp_path)
  os.remove(os.path.join(path, missing))
  with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
    pretrained.load("tiny", root=root)


def test_unknown_model_lists_the_available_ones(packed):
  root, _ = packed
  with pytest.raises(FileNotFoundError, match=r"'nope'.*available: tiny"):
    pretrained.load("nope", root=root)
  with pytest.raises(FileNotFoundError, match="available: none"):
    pretrained.model_dir("tiny", root=os.path.join(root, "empty"))


def test_tree_mismatch_lists_the_keys(packed, tmp_path):
  root, path = _copy(packed, tmp_path)
  params = serialization.msgpack_restore(open(os.path.join(path, "params.msgpack"), "rb").read())
  flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
  dropped = sorted(flat)[0]
  reshaped = next(k for k in sorted(flat) if k.endswith("kernel"))
  del flat[dropped]
  flat[reshaped] = np.zeros((1, 2, 3), np.float32)
  flat["extra_layer/kernel"] = np.zeros((3,), np.float32)
  _rewrite_params(path, traverse_util.unflatten_dict(
      {tuple(k.split("/")): v for k, v in flat.items()}))
  with pytest.raises(ValueError) as info:
    pretrained.load("tiny", root=root)
  msg = str(info.value)
  assert "params.msgpack" in msg and "config.json" in msg
  assert f"missing keys (1): {dropped}" in msg
  assert "unexpected keys (1): extra_layer/kernel" in msg
  assert f"mis-shaped keys (1): {reshaped}: (1, 2, 3)" in msg


def test_env_var_and_inference_restore(packed, workdir, monkeypatch):
  root, _ = packed
  monkeypatch.setenv(pretrained.ENV_VAR, root)
  assert pretrained.available() == ["tiny"]
  module, params, desc = inference.restore(model="tiny")
  assert desc == "shipped model tiny" and desc.model == "tiny" and desc.step == 5
  assert desc.workdir is None
  _, want_params, _ = inference.restore(workdir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, want_params)

  _, _, desc = inference.restore(workdir)
  assert desc == f"workdir {workdir} at step 5" and desc.step == 5 and desc.model is None
  with pytest.raises(ValueError, match="not both"):
    inference.restore(workdir, model="tiny")
  with pytest.raises(ValueError, match="step=5"):
    inference.restore(model="tiny", step=5)
  with pytest.raises(FileNotFoundError, match=pretrained.DEFAULT_MODEL):
    inference.restore()  # the default model, not in this root


# ---------------------------------------------------------------- CLI and packaging


def test_cli_pack_and_list(workdir, tmp_path, capsys):
  root = str(tmp_path / "models")
  common = ["--workdir", workdir, "--name", "m1", "--root", root]
  assert pretrained_cli.main(common + ["--metadata", "note=hello"]) == 0
  assert "at step 5" in capsys.readouterr().out
  assert pretrained_cli.main(common) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert pretrained_cli.main(common + ["--overwrite", "--step", "5"]) == 0
  assert pretrained_cli.main(common + ["--step", "9", "--overwrite"]) == 2
  assert "saved steps: [5]" in capsys.readouterr().err
  capsys.readouterr()
  assert pretrained_cli.main(["--list", "--root", root]) == 0
  out = capsys.readouterr().out
  row = [l for l in out.splitlines() if " m1 " in l]
  assert len(row) == 1 and row[0].split()[1:4] == [f"{_params(root, 'm1'):,}",
                                                   f"{_folder_mib(root, 'm1'):.2f}", "5"]
  assert pretrained_cli.main(["--list", "--verbose", "--root", root]) == 0
  out = capsys.readouterr().out
  assert "m1" in out and "MiB" in out and "step 5" in out and workdir in out
  assert pretrained_cli.main(["--verbose", "--root", root]) == 2  # --verbose is for --list
  assert pretrained_cli.main(["--list", "--root", str(tmp_path / "none")]) == 0
  assert "no models" in capsys.readouterr().out
  assert pretrained_cli.main(["--name", "x"]) == 2
  assert pretrained_cli.main(common + ["--metadata", "novalue"]) == 2


def _params(root, name):
  """The parameter count of a packed model, from its params.msgpack."""
  with open(os.path.join(root, name, "params.msgpack"), "rb") as f:
    tree = serialization.msgpack_restore(f.read())
  return sum(np.asarray(x).size for x in jax.tree_util.tree_leaves(tree))


def _folder_mib(root, name):
  folder = pathlib.Path(root) / name
  return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def test_list_is_a_short_table(capsys):
  assert pretrained_cli.main(["--list"]) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert max(map(len, lines)) <= 100, max(lines, key=len)
  names = pretrained.available()
  rows = {l[2:].split()[0]: l for l in lines if l[2:].split()[:1] and l[2:].split()[0] in names}
  assert sorted(rows) == sorted(names)
  for name, row in rows.items():
    assert row.startswith("* " if name == pretrained.DEFAULT_MODEL else "  "), row
    meta = pretrained.read_metadata(name)
    assert row[2:].split()[1] == f"{meta['num_params']:,}", row
    assert meta["data"].split(" ")[0] in row  # the summary names the training data
  # --verbose: every metadata entry, however long the line
  assert pretrained_cli.main(["--list", "--verbose"]) == 0
  verbose = capsys.readouterr().out
  for name in names:
    meta = pretrained.read_metadata(name)
    assert meta["packed_at"] in verbose and meta["command"] in verbose


def test_summary_names_data_and_the_model_tuned_from():
  meta = {"data": "synthetic_online v2.3.0 (flax_gradnet/data/online.py), p_soft 0.5",
          "command": "python -m flax_gradnet.main --config=configs/x.py (config.init_from = "
                     "the shipped gradnet_s_psnr; run as ...)"}
  assert pretrained_cli.summary(meta) == "synthetic_online v2.3.0, tuned from gradnet_s_psnr"
  assert pretrained_cli.summary({**meta, "summary": "  a  model\n"}) == "a model"
  assert pretrained_cli.summary({}) == "-"
  assert pretrained_cli.summary({"error": "bad json"}) == "unreadable metadata: bad json"


def test_setup_cfg_ships_every_model_file():
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  patterns = cfg["options.package_data"]["flax_gradnet.pretrained"].split()
  for f in pretrained.MODEL_FILES:
    assert any(fnmatch.fnmatch(f"gradnet_s_synth/{f}", p) for p in patterns), f


# ---------------------------------------------------------------- the shipped models

_SHIPPED = pretrained.available(pretrained.PACKAGE_DIR)


@pytest.mark.parametrize("name", _SHIPPED or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no model shipped yet in {pretrained.PACKAGE_DIR} (pack one with "
           "`python -m flax_gradnet.pretrained --workdir=W --name=N`)"))])
def test_shipped_models_reproduce_their_reference(name):
  _check_reproduces_reference(name, pretrained.PACKAGE_DIR)


def test_default_model_is_shipped_once_any_is():
  if not _SHIPPED:
    pytest.skip(f"no model shipped yet in {pretrained.PACKAGE_DIR}")
  assert pretrained.DEFAULT_MODEL in _SHIPPED


def test_models_trained_through_the_low_frequency_step_say_so(capsys):
  """gradnet_s_lf's content loss read its output through the low-frequency step
  (config.loss_low_freq_sigma=32), so its output needs that step: the CLIs warn
  when it is turned off or made smaller, and stay quiet with the default."""
  if "gradnet_s_lf" not in _SHIPPED:
    pytest.skip("gradnet_s_lf is not shipped")
  _, _, lf = inference.restore(model="gradnet_s_lf")
  _, _, psnr = inference.restore(model="gradnet_s_psnr")
  assert inference.trained_low_freq_sigma(lf) == 32.0
  assert inference.trained_low_freq_sigma(psnr) == 0.0
  assert inference.low_freq_warning(lf, inference.LOW_FREQ_SIGMA) is None
  assert inference.low_freq_warning(psnr, 0.0) is None
  message = inference.low_freq_warning(lf, 0.0)
  assert message.startswith("warning: shipped model gradnet_s_lf was trained through the "
                            "low-frequency step (config.loss_low_freq_sigma=32)")
  assert "--low_freq_sigma=32 or more" in message
