"""Inference settings are part of the model: `inference.Options`, where they
come from (a flag > the model's recorded setting > the paper's protocol), and
the tools and the Python API taking them alike."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
from PIL import Image

from configs import default
from flax_gradnet import deblur, evaluate, evaluation, export, inference, pretrained
from flax_gradnet import workdir as workdir_lib
from flax_gradnet.models import Generator

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)
# What the tiny "recorded" workdir keeps with itself (its config.json's `inference`).
RECORDED = {"self_ensemble": "mean", "low_freq_sigma": 4.0}


# ----------------------------------------------------------------------------
# Options.


def test_the_defaults_are_the_papers_protocol():
  o = inference.Options()
  assert o == inference.PAPER_PROTOCOL and o.is_paper_protocol
  assert o.to_dict() == dict(self_ensemble="off", low_freq_sigma=0.0, local_stats=0, tile=None,
                             tile_overlap=32, max_memory=None, weights=None, scale_gate=0.0)
  assert o.describe() == ("one generator pass over the whole image, its output as it is "
                          "(the paper's protocol)")
  # configs/default.py is the paper's setting: it records the paper's protocol.
  assert "inference" in default.get_config()
  assert inference.Options.from_config(default.get_config()) == inference.PAPER_PROTOCOL
  with pytest.raises(dataclasses.FrozenInstanceError):
    o.tile = 64
  with pytest.raises(TypeError):
    inference.Options("shrink")  # keyword-only


@pytest.mark.parametrize("field,value", [
    ("self_ensemble", "median"), ("self_ensemble", None), ("low_freq_sigma", -1.0),
    ("low_freq_sigma", float("nan")), ("low_freq_sigma", float("inf")), ("low_freq_sigma", "32"),
    ("local_stats", -2), ("local_stats", 1.5), ("local_stats", True), ("tile", 0), ("tile", -64),
    ("tile", 64.0), ("tile_overlap", -1), ("max_memory", 0.0), ("max_memory", float("nan")),
    ("max_memory", -3), ("weights", "best"), ("scale_gate", -0.5), ("scale_gate", float("inf")),
    ("scale_gate", "1")])
def test_validation_names_the_field(field, value):
  with pytest.raises(ValueError, match=f"inference option {field} must be"):
    inference.Options(**{field: value})


def test_values_are_normalised_and_checked_together():
  o = inference.Options(low_freq_sigma=32, max_memory=2, local_stats=np.int64(16),
                        self_ensemble=True)
  assert o.low_freq_sigma == 32.0 and isinstance(o.low_freq_sigma, float)
  assert o.max_memory == 2.0 and isinstance(o.max_memory, float)
  assert o.local_stats == 16 and type(o.local_stats) is int  # pylint: disable=unidiomatic-typecheck
  assert o.self_ensemble == "mean"  # the switch it was before it took a value
  assert inference.Options(self_ensemble=False).self_ensemble == "off"
  with pytest.raises(ValueError, match="tile_overlap must be smaller than tile=32"):
    inference.Options(tile=32)  # the default overlap, 32, is not smaller
  assert inference.Options(tile=32, tile_overlap=8).tile == 32


def test_from_dict_to_dict_and_overridden():
  o = inference.Options.from_dict({"self_ensemble": "shrink", "low_freq_sigma": 32})
  assert o == inference.Options(self_ensemble="shrink", low_freq_sigma=32.0)
  assert inference.Options.from_dict(o.to_dict()) == o
  assert json.loads(json.dumps(o.to_dict())) == o.to_dict()  # JSON-ready
  # None means "not recorded": the default.
  assert inference.Options.from_dict({"self_ensemble": None, "tile": None}) == inference.Options()
  with pytest.raises(ValueError, match=r"unknown inference option\(s\) ensemble, sigma"):
    inference.Options.from_dict({"sigma": 1, "ensemble": "mean", "tile": 64})
  with pytest.raises(ValueError, match="must be a dict"):
    inference.Options.from_dict(["shrink"])
  # overridden: each keyword that is not None; the rest stays.
  assert o.overridden() is o and o.overridden(self_ensemble=None, tile=None) is o
  p = o.overridden(self_ensemble="off", tile=64, tile_overlap=8)
  assert (p.self_ensemble, p.low_freq_sigma, p.tile, p.tile_overlap) == ("off", 32.0, 64, 8)
  assert o.self_ensemble == "shrink"  # the original is unchanged
  with pytest.raises(ValueError, match=r"unknown inference option\(s\) sigma"):
    o.overridden(sigma=3)
  with pytest.raises(ValueError, match="low_freq_sigma must be >= 0"):
    o.overridden(low_freq_sigma=-1)


def test_from_config_absent_partial_and_unknown_fields():
  config = ml_collections.ConfigDict({"model": dict(TINY)})
  assert inference.Options.from_config(config) is inference.PAPER_PROTOCOL  # absent
  assert inference.Options.from_config({"inference": None}) is inference.PAPER_PROTOCOL
  config.inference = ml_collections.ConfigDict({"low_freq_sigma": 32.0})  # partial
  assert inference.Options.from_config(config) == inference.Options(low_freq_sigma=32.0)
  assert inference.Options.from_config({"inference": {"tile": 256, "max_memory": 8}}) == \
      inference.Options(tile=256, max_memory=8.0)
  # -1 (the training crop size) is the config's crop_size, when it says one.
  assert inference.Options.from_config(
      {"inference": {"local_stats": -1}, "crop_size": 128}).local_stats == 128
  assert inference.Options.from_config({"inference": {"local_stats": -1}}).local_stats == -1
  with pytest.raises(ValueError, match=r"^config.inference: unknown inference option\(s\) "
                                       r"ensemble"):
    inference.Options.from_config({"inference": {"ensemble": "mean"}})
  with pytest.raises(ValueError, match="^config.inference: inference option self_ensemble"):
    inference.Options.from_config({"inference": {"self_ensemble": "median"}})


def test_the_shipped_default_restores_its_recorded_settings():
  """The default shipped model (gradnet_s_lf) deblurs as it was chosen: the
  shrunk self-ensemble through the low-frequency step of sigma 32 px, as its
  config.json and configs/gradnet_s_lf.py record."""
  import configs  # pylint: disable=g-import-not-at-top
  recorded = {"self_ensemble": "shrink", "low_freq_sigma": 32.0, "scale_gate": 1.05}
  folder = os.path.join(pretrained.PACKAGE_DIR, pretrained.DEFAULT_MODEL)
  with open(os.path.join(folder, "config.json")) as f:
    shipped = json.load(f)
  assert shipped["inference"] == recorded
  _, _, restored = inference.restore()
  assert restored.model == pretrained.DEFAULT_MODEL and restored.options_recorded
  assert dataclasses.replace(restored.options, weights=None) == inference.Options(**recorded)
  assert restored.options == inference.Options.from_config(shipped).overridden(
      weights=restored.weights)
  assert configs.load(pretrained.DEFAULT_MODEL).inference.to_dict() == {
      **default.get_config().inference.to_dict(), **recorded}


def test_describe_says_every_option_that_changes_the_output():
  text = inference.Options(self_ensemble="shrink", low_freq_sigma=32, local_stats=128,
                           tile=256).describe()
  assert text == ("x8 geometric self-ensemble shrunk toward the input where the 8 disagree "
                  "(Wiener gain over 5x5 boxes); tiles of 256x256 px, overlap 32; test-time "
                  "local statistics over 128x128 boxes; the input's low frequencies kept (below "
                  "a Gaussian of sigma 32 px)")
  assert inference.Options(self_ensemble="mean").describe() == (
      "x8 geometric self-ensemble (flips and transposes, outputs averaged); the generator's "
      "output as it is")
  assert "training crop size" in inference.Options(local_stats=-1).describe()
  # The budget and the weights do not change the numbers' protocol.
  paper = inference.PAPER_PROTOCOL.describe()
  assert inference.Options(max_memory=1, weights="raw").describe() == paper
  assert evaluation.protocol_line(inference.Options(low_freq_sigma=8)).endswith(
      "; one generator pass; the input's low frequencies kept (below a Gaussian of sigma 8 px)")


def test_library_modules_do_not_import_the_cli():
  code = ("import sys; from flax_gradnet import inference, evaluation; "
          "print('flax_gradnet.cli' in sys.modules)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


# ----------------------------------------------------------------------------
# The model's recorded options: restore, the Python API, the tools.


@pytest.fixture(scope="module")
def tiny_params():
  model = Generator(**TINY)
  return model, jax.jit(model.init)(jax.random.key(2, impl="rbg"),
                                    jnp.zeros((1, 16, 16, 3)))["params"]


def _workdir(write, path, params, inference_options=None, crop_size=None):
  """A workdir as training writes it (`write`: conftest's generator_workdir);
  its config.json records `inference_options`."""
  write(str(path), TINY, params, 3)
  config = workdir_lib.load_config(str(path))
  if inference_options is not None:
    config.inference = ml_collections.ConfigDict(inference_options)
  if crop_size is not None:
    config.crop_size = crop_size
  workdir_lib.save_config(str(path), config)
  return str(path)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, tiny_params, generator_workdir):
  """{"paper": a workdir whose config records no inference options, "recorded":
  one that records RECORDED}, the same generator in both."""
  _, params = tiny_params
  root = tmp_path_factory.mktemp("workdirs")
  return {"paper": _workdir(generator_workdir, root / "paper", params),
          "recorded": _workdir(generator_workdir, root / "recorded", params, RECORDED)}


def test_restore_returns_the_recorded_options(workdirs, tmp_path, tiny_params, monkeypatch,
                                              generator_workdir):
  _, _, paper = inference.restore(workdirs["paper"])
  assert paper.options == inference.PAPER_PROTOCOL.overridden(weights=paper.weights)
  assert not paper.options_recorded
  _, _, recorded = inference.restore(workdirs["recorded"])
  assert recorded.options == inference.Options(**RECORDED, weights=recorded.weights)
  assert recorded.options_recorded
  # Overrides win; None keeps the model's.
  assert inference.resolve_options(recorded, self_ensemble=None, low_freq_sigma=0).to_dict() == \
      dict(recorded.options.to_dict(), low_freq_sigma=0.0)
  assert inference.resolve_options(recorded, inference.PAPER_PROTOCOL) == \
      inference.PAPER_PROTOCOL

  # local_stats=-1 (recorded, or a bare --local_stats) is the training crop size.
  _, params = tiny_params
  crop = _workdir(generator_workdir, tmp_path / "crop", params, {"local_stats": -1},
                  crop_size=24)
  _, _, r = inference.restore(crop)
  assert r.options.local_stats == 24
  assert inference.resolve_options(r, local_stats=0).local_stats == 0
  with pytest.raises(ValueError, match="crop_size"):
    inference.resolve_options(recorded, local_stats=-1)  # its config has no crop_size

  # The recorded weights are the default weights: "ema" of a checkpoint without them fails.
  ema = _workdir(generator_workdir, tmp_path / "ema", params, {"weights": "ema"})
  with pytest.raises(ValueError, match="(?i)ema"):
    inference.restore(ema)
  assert inference.restore(ema, weights="raw")[2].weights == "raw"

  # Recorded options that are not valid: restore says which.
  bad = _workdir(generator_workdir, tmp_path / "bad", params, {"self_ensemble": "median"})
  with pytest.raises(ValueError, match="config.inference: inference option self_ensemble"):
    inference.restore(bad)

  # A shipped model keeps the options of the config it was packed with.
  root = str(tmp_path / "models")
  pretrained.pack(workdirs["recorded"], "rec", root=root)
  pretrained.pack(workdirs["paper"], "plain", root=root)
  monkeypatch.setenv(pretrained.ENV_VAR, root)
  _, _, shipped = inference.restore(model="rec")
  assert shipped.options.overridden(weights="raw") == inference.Options(**RECORDED, weights="raw")
  assert shipped.options_recorded
  _, _, plain = inference.restore(model="plain")
  assert plain.options.is_paper_protocol and not plain.options_recorded


def test_python_api_deblurs_with_one_options_object(workdirs):
  model, params, restored = inference.restore(workdirs["recorded"])
  photo = skimage.data.chelsea()[60:92, 100:136].copy()
  fn = inference.deblur_fn_for(model, params, restored.options)
  assert fn.options == restored.options and fn.ensemble == "mean"
  got = inference.deblur_image(fn, photo)  # the rest of the options: fn.options
  want = inference.deblur_image(inference.make_deblur_fn(model, params, ensemble="mean"), photo,
                                low_freq_sigma=4.0)  # the loose arguments
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      inference.deblur_image(fn, photo, restored.options.overridden(low_freq_sigma=0)),
      inference.deblur_image(fn, photo, low_freq_sigma=0.0))
  with pytest.raises(ValueError, match="multiple of 4 for this generator"):
    inference.deblur_fn_for(model, params, inference.Options(tile=30, tile_overlap=8))
  with pytest.raises(ValueError, match="must be resolved first"):
    inference.deblur_fn_for(model, params, inference.Options(local_stats=-1))


def _pairs(folder, n=2, size=(24, 28)):
  photo = skimage.data.astronaut()
  for i in range(n):
    sharp = photo[50 * i:50 * i + size[0], 120:120 + size[1]]
    blur = ((sharp.astype(np.float32) + np.roll(sharp, 1, 1) + np.roll(sharp, -1, 1)) / 3)
    for sub, image in (("input", blur.round().astype(np.uint8)), ("target", sharp)):
      (folder / sub).mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(folder / sub / f"{i}.png")
  return folder


def _evaluate(workdir, pairs, out, *flags):
  rc = evaluate.main(["--workdir", workdir, "--dataset", "paired_folder", "--path", str(pairs),
                      "--data_dir", str(pairs) + "_tfds", "--output_dir", str(out),
                      "--no-progress", "--num_grids=0", *flags])
  assert rc == 0
  with open(out / evaluation.CSV_FILE, newline="") as f:
    rows = list(csv.DictReader(f))
  return rows, json.loads((out / evaluation.SUMMARY_FILE).read_text())


def test_evaluate_defaults_to_the_models_options(workdirs, tmp_path, capsys):
  pairs = _pairs(tmp_path / "pairs")
  # A paper-config workdir: the default is exactly --self_ensemble=off --low_freq_sigma=0.
  rows, summary = _evaluate(workdirs["paper"], pairs, tmp_path / "p0")
  assert "the paper's protocol: the model records no options" in capsys.readouterr().err
  explicit, _ = _evaluate(workdirs["paper"], pairs, tmp_path / "p1", "--self_ensemble=off",
                          "--low_freq_sigma=0")
  assert rows == explicit
  assert summary["inference"]["self_ensemble"] == "off"
  assert summary["protocol"].endswith("(the paper's protocol)")

  # A workdir that records options gets them by default, said in the protocol line and
  # summary.json; the same numbers as those options given as flags.
  rows, summary = _evaluate(workdirs["recorded"], pairs, tmp_path / "r0")
  captured = capsys.readouterr()
  assert "(the model's recorded options)" in captured.err
  assert {k: summary["inference"][k] for k in RECORDED} == RECORDED
  words = inference.Options(**RECORDED).describe()
  assert summary["protocol"].endswith(words) and words in captured.out
  explicit, _ = _evaluate(workdirs["paper"], pairs, tmp_path / "r1", "--self_ensemble=mean",
                          "--low_freq_sigma=4")
  assert rows == explicit
  assert rows != _evaluate(workdirs["paper"], pairs, tmp_path / "r2")[0]
  # Flags override them.
  rows, summary = _evaluate(workdirs["recorded"], pairs, tmp_path / "r3", "--no-self_ensemble",
                            "--low_freq_sigma=0")
  assert "--self_ensemble, --low_freq_sigma over the model's recorded options" in \
      capsys.readouterr().err
  assert rows == _evaluate(workdirs["paper"], pairs, tmp_path / "r4")[0]
  assert summary["inference"]["self_ensemble"] == "off"

  # The Python API of evaluate takes the workdir's options too.
  api = evaluation.evaluate_workdir(workdirs["recorded"], evaluate_source(pairs),
                                  output_dir=str(tmp_path / "api"), progress=False, num_grids=0)
  assert api["means"] == _evaluate(workdirs["recorded"], pairs, tmp_path / "r5")[1]["means"]
  assert {k: api["inference"][k] for k in RECORDED} == RECORDED


def evaluate_source(pairs):
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.get_source("paired_folder", "test", data_dir=str(pairs) + "_tfds",
                             path=str(pairs))


def test_evaluate_checks_a_recorded_tile_against_the_stride(tmp_path, tiny_params, capsys,
                                                           generator_workdir):
  _, params = tiny_params
  wd = _workdir(generator_workdir, tmp_path / "wd", params, {"tile": 30, "tile_overlap": 8})
  pairs = _pairs(tmp_path / "pairs", n=1)
  rc = evaluate.main(["--workdir", wd, "--dataset", "paired_folder", "--path", str(pairs),
                      "--data_dir", str(pairs) + "_tfds", "--output_dir", str(tmp_path / "o")])
  assert rc == 2
  assert "the model's recorded tile must be a multiple of 4" in capsys.readouterr().err
  # --tile overrides it.
  rows, summary = _evaluate(wd, pairs, tmp_path / "o2", "--tile=16")
  assert (summary["tile"], summary["tile_overlap"]) == (16, 8) and len(rows) == 1


def test_evaluation_core_takes_options(workdirs, tmp_path):
  """(model, params, options, examples) -> rows and means: what training's periodic
  evaluation calls with `Options.from_config(config)`."""
  model, params, restored = inference.restore(workdirs["recorded"])
  pairs = _pairs(tmp_path / "pairs")
  examples = [{"name": f"{i}.png", "blur": np.asarray(Image.open(pairs / "input" / f"{i}.png")),
               "sharp": np.asarray(Image.open(pairs / "target" / f"{i}.png"))} for i in range(2)]
  config = workdir_lib.load_config(workdirs["recorded"])
  options = inference.Options.from_config(config)
  report = evaluation.evaluate_examples(model, params, options, examples)
  assert len(report.rows) == 2 and report.paired and report.options.max_memory is None
  assert report.means["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report.rows]))
  assert report.protocol == evaluation.protocol_line(options)
  fn = inference.deblur_fn_for(model, params, options)
  from flax_gradnet import metrics  # pylint: disable=g-import-not-at-top
  for ex, row in zip(examples, report.rows):
    out = inference.deblur_image(fn, ex["blur"])
    assert row["psnr"] == pytest.approx(float(metrics.psnr(out, ex["sharp"], data_range=255.0)),
                                        abs=1e-4)
  with pytest.raises(ValueError, match="must be resolved first"):
    evaluation.evaluate_examples(model, params, inference.Options(local_stats=-1), examples)
  with pytest.raises(TypeError, match="inference.Options"):
    evaluation.evaluate_examples(model, params, {"self_ensemble": "off"}, examples)


def test_deblur_defaults_to_the_models_options(workdirs, tmp_path, capsys):
  photo = skimage.data.chelsea()[60:92, 100:136].copy()
  Image.fromarray(photo).save(tmp_path / "a.png")
  model, params, restored = inference.restore(workdirs["recorded"])

  def run(workdir, out, *flags):
    assert deblur.main([str(tmp_path / "a.png"), "--workdir", workdir, "--output_dir",
                        str(tmp_path / out), *flags]) == 0
    return np.asarray(Image.open(tmp_path / out / "a.png")), capsys.readouterr().err

  got, err = run(workdirs["recorded"], "r0")
  words = inference.Options(**RECORDED).describe()
  assert f"inference: {words}; memory budget 3 GiB (the model's recorded options)" in err
  np.testing.assert_array_equal(got, inference.deblur_image(
      inference.deblur_fn_for(model, params, restored.options), photo))
  flags_given, _ = run(workdirs["paper"], "p0", "--self_ensemble=mean", "--low_freq_sigma=4")
  np.testing.assert_array_equal(got, flags_given)
  # Flags override the model's; the paper workdir's default is one pass, as it is.
  overridden, err = run(workdirs["recorded"], "r1", "--self_ensemble=off", "--low_freq_sigma=0")
  assert "--self_ensemble, --low_freq_sigma over the model's recorded options" in err
  paper, err = run(workdirs["paper"], "p1")
  assert "(the paper's protocol: the model records no options)" in err
  np.testing.assert_array_equal(overridden, paper)
  np.testing.assert_array_equal(paper, inference.deblur_image(
      inference.make_deblur_fn(model, params), photo))


def test_deblur_memory_budget_flag_model_then_the_tools(tmp_path, tiny_params, capsys,
                                                       generator_workdir):
  _, params = tiny_params
  wd = _workdir(generator_workdir, tmp_path / "wd", params, {"max_memory": 0.5})
  Image.fromarray(skimage.data.chelsea()[:24, :28]).save(tmp_path / "a.png")
  for flags, budget in (([], "0.5"), (["--max_memory=2"], "2")):
    assert deblur.main([str(tmp_path / "a.png"), "--workdir", wd, "--overwrite",
                        "--output_dir", str(tmp_path / "o"), *flags]) == 0
    assert f"memory budget {budget} GiB" in capsys.readouterr().err


def test_export_records_the_models_options(workdirs, tmp_path, capsys):
  out = str(tmp_path / "gen.jaxexport")
  assert export.main([f"--workdir={workdirs['recorded']}", f"--output={out}", "--height=16",
                      "--width=16", "--platforms=cpu"]) == 0
  assert "the model's recorded inference options" in capsys.readouterr().out
  meta = export.load_exported(out).meta
  assert {k: meta["inference"][k] for k in RECORDED} == RECORDED
  assert meta["inference"]["local_stats"] == 0
