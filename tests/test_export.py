"""Exported artifacts reproduce the module; the loader needs no training code."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_gradnet import export
from flax_gradnet.models import Generator

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, generator_workdir):
  wd = str(tmp_path_factory.mktemp("workdir"))
  model = Generator(**TINY)
  params = jax.jit(model.init)(jax.random.key(1, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  generator_workdir(wd, TINY, params, 7)
  return wd, model, params


def _x(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_polymorphic_export_matches_module(trained, tmp_path):
  wd, model, params = trained
  out = str(tmp_path / "gen.jaxexport")
  assert export.main([f"--workdir={wd}", f"--output={out}"]) == 0
  fn = export.load_exported(out)
  assert fn.meta["kind"] == "polymorphic"
  # The workdir records no inference options: the paper's protocol, recorded.
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  assert {k: v for k, v in fn.meta["inference"].items() if k != "weights"} == {
      k: v for k, v in inference.PAPER_PROTOCOL.to_dict().items() if k != "weights"}
  # One artifact lowered for CPU, GPU and TPU by default, made and run here on a CPU.
  assert fn.meta["platforms"] == list(export.DEFAULT_PLATFORMS) == ["cpu", "cuda", "tpu"]
  import zipfile  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(out) as z:
    for name in fn.meta["functions"]:
      exported = jax.export.deserialize(bytearray(z.read(f"{name}.jaxexport")))
      assert exported.platforms == ("cpu", "cuda", "tpu")
  # square, portrait, landscape, and sizes that are not multiples of 4; batch sizes vary.
  apply = jax.jit(model.apply)
  for shape in [(1, 16, 16, 3), (2, 37, 22, 3), (1, 24, 41, 3), (3, 8, 9, 3)]:
    np.testing.assert_allclose(fn(_x(shape)), apply({"params": params}, _x(shape)),
                               atol=1e-5, err_msg=str(shape))
  with pytest.raises(ValueError, match="at least 8x8"):
    fn(_x((1, 6, 20, 3)))
  # Refuses to overwrite without --overwrite, leaving the file as it was.
  before = open(out, "rb").read()
  assert export.main([f"--workdir={wd}", f"--output={out}"]) == 2
  assert open(out, "rb").read() == before


def test_export_of_a_shipped_model(trained, tmp_path, monkeypatch, capsys):
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "models")
  pretrained.pack(trained[0], "tiny", root=root)
  monkeypatch.setenv(pretrained.ENV_VAR, root)
  out = str(tmp_path / "shipped.jaxexport")
  argv = [f"--output={out}", "--height=16", "--width=16", "--platforms=cpu"]
  assert export.main(["--model=tiny", "--step=7"] + argv) == 2  # one set of weights
  assert "--step" in capsys.readouterr().err and not os.path.exists(out)
  assert export.main(["--model=tiny"] + argv) == 0
  assert "shipped model tiny" in capsys.readouterr().out
  module, params = pretrained.load("tiny")
  x = _x((1, 16, 16, 3))
  np.testing.assert_allclose(export.load_exported(out)(x),
                             jax.jit(module.apply)({"params": params}, x), atol=1e-5)


def test_fixed_shape_export(trained, tmp_path):
  wd, model, params = trained
  out = str(tmp_path / "fixed.jaxexport")
  assert export.main([f"--workdir={wd}", f"--output={out}", "--height=20", "--width=26",
                      "--platforms=cpu"]) == 0
  fn = export.load_exported(out)
  assert fn.meta["platforms"] == ["cpu"]
  x = _x((2, 20, 26, 3))
  np.testing.assert_allclose(fn(x), jax.jit(model.apply)({"params": params}, x), atol=1e-5)
  with pytest.raises(ValueError, match="20x26"):
    fn(_x((1, 20, 28, 3)))


def test_loader_needs_no_training_code(trained, tmp_path):
  wd, model, params = trained
  out = str(tmp_path / "gen.jaxexport")
  with open(out, "wb") as f:
    f.write(export.export_generator(model, params))
  x = _x((1, 21, 34, 3), seed=3)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "ref.npy", np.asarray(jax.jit(model.apply)({"params": params}, x)))
  # A fresh process that blocks flax and the models: only jax, numpy and export.py itself.
  code = textwrap.dedent(f"""
      import sys, importlib.util
      for name in ("flax", "orbax", "optax", "flax_gradnet.models"):
        sys.modules[name] = None
      spec = importlib.util.spec_from_file_location("exp", {export.__file__!r})
      exp = importlib.util.module_from_spec(spec); spec.loader.exec_module(exp)
      import numpy as np
      y = exp.load_exported({out!r})(np.load({str(tmp_path / 'x.npy')!r}))
      assert np.allclose(y, np.load({str(tmp_path / 'ref.npy')!r}), atol=1e-5)
      print("OK")
  """)
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_export_errors(tmp_path, capsys):
  assert export.main([f"--workdir={tmp_path}", f"--output={tmp_path / 'o'}"]) == 2
  assert "config.json" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    export.main([f"--workdir={tmp_path}", f"--output={tmp_path / 'o'}", "--height=8"])
  with pytest.raises(SystemExit):  # argparse's usage error, exit 2
    export.main([f"--workdir={tmp_path}", f"--output={tmp_path / 'o'}", "--platforms=cpu,vulkan"])
  assert "--platforms" in capsys.readouterr().err
  with pytest.raises(ValueError, match="platforms"):
    export.export_generator(None, {}, platforms=())
