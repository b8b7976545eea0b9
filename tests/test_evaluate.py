"""Tests of the evaluation tool on a tiny trained workdir and tiny data sets (CPU)."""

import csv
import glob
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from flax_gradnet import evaluate, evaluation, inference, metrics, pretrained, train
from flax_gradnet.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC = dict(train_pairs_per_image=1, test_pairs_per_image=1, size=48)  # = conftest's


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_train_config):
  """(workdir, data_dir): a 2-step tiny GAN trained on tiny synthetic pairs."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  workdir = str(tmp_path_factory.mktemp("workdir"))
  config = tiny_train_config(data_dir, num_train_steps=2, log_every_steps=2, eval_every_steps=2,
                             checkpoint_every_steps=2, num_eval_images=1, num_image_summaries=0)
  train.train_and_evaluate(config, workdir)
  return workdir, data_dir


@pytest.fixture(scope="module")
def test_source(trained):
  return pipeline.get_source("synthetic", "test", data_dir=trained[1], **SYNTHETIC)


def skimage_metrics(a, b, y_channel=False, crop_border=0):
  """PSNR/SSIM computed independently: scikit-image, numpy BT.601 luma."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  if crop_border:
    a = a[crop_border:-crop_border, crop_border:-crop_border]
    b = b[crop_border:-crop_border, crop_border:-crop_border]
  if y_channel:
    w = np.array([65.481, 128.553, 24.966]) / 255.0
    a, b = a @ w + 16.0, b @ w + 16.0
  kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
  if not y_channel:
    kw["channel_axis"] = -1
  return peak_signal_noise_ratio(b, a, data_range=255), structural_similarity(a, b, **kw)


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.mark.parametrize("y_channel,crop_border", [(False, 0), (True, 3)])
def test_csv_and_means_match_scikit_image_on_written_outputs(trained, test_source, tmp_path,
                                                             y_channel, crop_border):
  workdir, _ = trained
  out = tmp_path / "eval"
  summary = evaluation.evaluate_workdir(workdir, test_source, output_dir=str(out),
                                      dataset="synthetic", y_channel=y_channel,
                                      crop_border=crop_border, num_grids=2, progress=False)
  rows = read_csv(out / evaluation.CSV_FILE)
  n = len(test_source)
  assert n >= 2 and len(rows) == n == summary["num_images"]
  assert list(rows[0]) == list(evaluation.CSV_FIELDS)
  on_disk = json.loads((out / evaluation.SUMMARY_FILE).read_text())
  for k in evaluation.METRIC_KEYS:
    assert on_disk["means"][k] == pytest.approx(np.mean([float(r[k]) for r in rows]), abs=1e-9)
    assert summary["means"][k] == on_disk["means"][k]
  assert on_disk["step"] == 2 and on_disk["workdir"] == os.path.abspath(workdir)
  # The workdir's config records no inference options: the paper's protocol, said so.
  assert on_disk["protocol"] == evaluation.protocol_line(
      inference.PAPER_PROTOCOL, y_channel=y_channel, crop_border=crop_border)
  assert on_disk["protocol"].startswith(metrics.protocol_string(y_channel, crop_border))
  assert on_disk["inference"] == dict(inference.PAPER_PROTOCOL.to_dict(),
                                      weights=on_disk["weights"])

  examples = {ex["name"]: ex for ex in pipeline.eval_iterator(test_source)}
  for r in rows:
    ex = examples[r["name"]]
    png = out / evaluation.OUTPUT_DIR / evaluation._safe_relpath(r["name"])
    deblurred = np.asarray(Image.open(png).convert("RGB"))
    assert deblurred.shape == ex["sharp"].shape
    p, s = skimage_metrics(deblurred, ex["sharp"], y_channel, crop_border)
    assert float(r["psnr"]) == pytest.approx(p, abs=1e-3)
    assert float(r["ssim"]) == pytest.approx(s, abs=1e-4)
    p, s = skimage_metrics(ex["blur"], ex["sharp"], y_channel, crop_border)
    assert float(r["blurry_psnr"]) == pytest.approx(p, abs=1e-3)
    assert float(r["blurry_ssim"]) == pytest.approx(s, abs=1e-4)

  grids = sorted(glob.glob(str(out / evaluation.GRID_DIR / "*.png")))
  assert len(grids) == 2
  g = np.asarray(Image.open(grids[0]))
  h, w = next(iter(examples.values()))["blur"].shape[:2]
  assert g.shape == (h, 3 * w, 3)  # blurry | deblurred | sharp
  assert glob.glob(str(out / "events.out.tfevents.*")), "no clu/TensorBoard events"


def test_outputs_equal_the_generator_applied_directly(trained, test_source, tmp_path):
  """The written PNG is the restored generator's output, quantized as metrics.quantize says."""
  workdir, _ = trained
  out = tmp_path / "eval"
  evaluation.evaluate_workdir(workdir, test_source, output_dir=str(out), num_images=1,
                            num_grids=0, progress=False)
  model, params, _ = inference.restore(workdir)
  ex = next(pipeline.eval_iterator(test_source))
  y = np.asarray(model.apply({"params": params}, ex["blur"][None].astype(np.float32) / 127.5 - 1))
  expected = np.clip(np.round((y[0].astype(np.float64) + 1) * 127.5), 0, 255)
  png = np.asarray(Image.open(out / evaluation.OUTPUT_DIR / evaluation._safe_relpath(ex["name"])))
  diff = np.abs(png.astype(np.float64) - expected)
  assert diff.max() <= 1 and np.mean(diff > 0) < 0.01  # float rounding at .5 boundaries only
  assert len(read_csv(out / evaluation.CSV_FILE)) == 1  # --num_images


def test_cli_prints_means_with_protocol(trained, tmp_path, capsys):
  workdir, data_dir = trained
  out = tmp_path / "cli"
  # The synthetic builder options of the fixture are not CLI flags: use a
  # paired folder written from the same test images instead.
  src = pipeline.get_source("synthetic", "test", data_dir=data_dir, **SYNTHETIC)
  folder = tmp_path / "pairs"
  for ex in pipeline.eval_iterator(src):
    stem = ex["name"].replace("/", "_")
    for sub, key in (("input", "blur"), ("target", "sharp")):
      (folder / sub).mkdir(parents=True, exist_ok=True)
      Image.fromarray(ex[key]).save(folder / sub / f"{stem}.png")
  rc = evaluate.main(["--workdir", workdir, "--dataset", "paired_folder", "--path", str(folder),
                      "--data_dir", data_dir, "--output_dir", str(out), "--no-save_outputs",
                      "--no-progress"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert metrics.protocol_string(False, 0) in captured.out
  # A workdir trained from configs/default.py records no inference options: the
  # paper's protocol by default, and the CLI says so.
  assert (evaluation.protocol_line(inference.PAPER_PROTOCOL) in captured.out
          and "(the paper's protocol)" in captured.out)
  assert "inference: one generator pass over the whole image" in captured.err
  rows = read_csv(out / evaluation.CSV_FILE)
  assert len(rows) == len(src)
  mean = np.mean([float(r["psnr"]) for r in rows])
  assert f"PSNR {mean:.4f} dB" in captured.out
  assert not os.path.exists(out / evaluation.OUTPUT_DIR)  # --no-save_outputs


def test_blur_only_writes_outputs_and_no_metrics(trained, tmp_path, capsys):
  workdir, data_dir = trained
  folder = tmp_path / "photos"
  (folder / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (40, 52, 3), np.uint8)).save(folder / "a.png")
  Image.fromarray(rng.integers(0, 256, (33, 30, 3), np.uint8)).save(folder / "sub" / "b.jpg")
  out = tmp_path / "out"
  rc = evaluate.main(["--workdir", workdir, "--dataset", "blur_only", "--path", str(folder),
                      "--data_dir", data_dir, "--output_dir", str(out), "--no-progress"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert "no metrics" in captured.out
  a = np.asarray(Image.open(out / evaluation.OUTPUT_DIR / "a.png"))
  b = np.asarray(Image.open(out / evaluation.OUTPUT_DIR / "sub" / "b.png"))
  assert a.shape == (40, 52, 3) and b.shape == (33, 30, 3)
  assert not os.path.exists(out / evaluation.CSV_FILE)
  summary = json.loads((out / evaluation.SUMMARY_FILE).read_text())
  assert summary["means"] == {} and summary["num_images"] == 2 and not summary["paired"]
  g = np.asarray(Image.open(sorted(glob.glob(str(out / evaluation.GRID_DIR / "*.png")))[0]))
  assert g.shape == (40, 104, 3)  # blurry | deblurred

  # Outputs inside the input folder would become inputs next time: refused.
  rc = evaluate.main(["--workdir", workdir, "--dataset", "blur_only", "--path", str(folder),
                      "--data_dir", data_dir, "--output_dir", str(folder / "out")])
  assert rc == 2 and "inside the input folder" in capsys.readouterr().err


def test_kohler_best_frame(trained, tmp_path):
  """Against the best-PSNR GroundTruth frame: the max of scikit-image's PSNR over the frames."""
  workdir, data_dir = trained
  root = tmp_path / "kohler"
  (root / "Image1" / "Kernel1").mkdir(parents=True)
  rng = np.random.default_rng(1)
  sharp = rng.integers(0, 256, (36, 44, 3)).astype(np.float64)
  Image.fromarray(np.clip(sharp + rng.normal(0, 20, sharp.shape), 0, 255).astype(np.uint8)).save(
      root / "Blurry1_1.png")
  for k, noise in ((1, 40.0), (2, 5.0), (3, 60.0)):
    frame = np.clip(sharp + rng.normal(0, noise, sharp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(frame).save(root / "Image1" / "Kernel1" / f"GroundTruth1_1_{k}.png")
  source = pipeline.get_source("kohler", "test", data_dir=data_dir, path=str(root))
  out = tmp_path / "eval"
  summary = evaluation.evaluate_workdir(workdir, source, output_dir=str(out), dataset="kohler",
                                      kohler_frames_dir=str(root), progress=False)
  assert "best" in summary["dataset_protocol"]
  (row,) = read_csv(out / evaluation.CSV_FILE)
  deblurred = np.asarray(Image.open(out / evaluation.OUTPUT_DIR / "Blurry1_1.png"))
  blur = np.asarray(Image.open(root / "Blurry1_1.png"))
  frames = {k: np.asarray(Image.open(root / "Image1" / "Kernel1" / f"GroundTruth1_1_{k}.png"))
            for k in (1, 2, 3)}
  for image, prefix in ((deblurred, ""), (blur, "blurry_")):
    scores = {k: skimage_metrics(image, f) for k, f in frames.items()}
    best = max(scores, key=lambda k: scores[k][0])
    assert int(row[prefix + "gt_frame"]) == best
    assert float(row[prefix + "psnr"]) == pytest.approx(scores[best][0], abs=1e-3)
    assert float(row[prefix + "ssim"]) == pytest.approx(scores[best][1], abs=1e-4)
  assert int(row["blurry_gt_frame"]) == 2  # the least noisy frame is nearest the blurry input


def test_missing_workdir_and_checkpoint_are_clear_errors(trained, tmp_path, capsys,
                                                        tiny_train_config):
  _, data_dir = trained
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="config.json"):
    evaluation.evaluate_workdir(missing, [], output_dir=str(tmp_path / "o"))
  rc = evaluate.main(["--workdir", missing, "--dataset", "synthetic", "--data_dir", data_dir,
                      "--output_dir", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert rc == 2 and "cannot restore a generator" in err and "config.json" in err

  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  (no_ckpt / "config.json").write_text(
      json.dumps(tiny_train_config(data_dir).to_dict()))
  rc = evaluate.main(["--workdir", str(no_ckpt), "--dataset", "synthetic", "--data_dir", data_dir,
                      "--output_dir", str(tmp_path / "o")])
  assert rc == 2 and "no checkpoints" in capsys.readouterr().err


def test_dataset_errors_are_clear(trained, tmp_path, capsys):
  workdir, data_dir = trained
  base = ["--workdir", workdir, "--data_dir", data_dir, "--output_dir", str(tmp_path / "o")]
  assert evaluate.main(base + ["--dataset", "blur_only"]) == 2
  assert "needs --path" in capsys.readouterr().err
  assert evaluate.main(base + ["--dataset", "kohler", "--path", str(tmp_path / "missing")]) == 2
  assert "is not a folder" in capsys.readouterr().err
  assert evaluate.main(base + ["--dataset", "gopro", "--manual_dir", str(tmp_path / "none")]) == 2
  err = capsys.readouterr().err
  assert "cannot open dataset 'gopro'" in err and "GOPRO_Large" in err
  assert evaluate.main(base + ["--dataset", "nonsense"]) == 2
  assert "unknown --dataset 'nonsense'" in capsys.readouterr().err
  assert evaluate.main(base + ["--dataset", "synthetic", "--tile", "34"]) == 2
  assert "--tile must be a multiple of 4" in capsys.readouterr().err
  # Not over the overlap (the model's, else 32): named.
  assert evaluate.main(base + ["--dataset", "synthetic", "--tile", "16"]) == 2
  assert "tile_overlap must be smaller than tile=16" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--path", "/some/folder"]])
def test_unknown_dataset_is_named_with_the_known_ones(tmp_path, capsys, extra):
  out = tmp_path / "o"
  assert evaluate.main(["--dataset=paired", f"--output_dir={out}"] + extra) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("error: unknown --dataset 'paired'")
  assert all(name in err for name in pipeline.DATASETS)
  assert "synthetic_strong" in err and "--path" not in err
  assert not out.exists()


def test_dataset_help_names_every_dataset():
  help_text = " ".join(evaluate._parser().format_help().split())  # pylint: disable=protected-access
  assert all(f" {name} " in help_text for name in pipeline.DATASETS)
  assert set(pipeline.DATASETS) <= set(evaluate.known_datasets())
  assert "gopro/blur" in evaluate.known_datasets()  # MANUAL_DATASETS' other spelling


def test_paper_table_markdown():
  tables = _load(ROOT / "experiments" / "paper_tables.py", "paper_tables_under_test")
  summary = {"means": {"psnr": 28.0, "ssim": 0.85}, "num_images": 1111, "step": 7,
             "protocol": "P", "dataset_protocol": "D", "workdir": "/w"}
  text = tables.metric_table("Table 5", tables.PAPER_TABLE5, {"ours": summary}, "cmd")
  assert "| Ours | 29.2252 | 0.8714 | 28.0000 | 0.8500 | -1.2252 | 1111 | 7 |" in text
  assert "| w/o RGCL | 29.0429 | 0.8691 | not run |" in text
  extra = tables.metric_table("Table 5", tables.EXTRA_TABLE5, {"wo_rgcl_kernels": summary}, "c")
  assert "| w/o RGCL kernels (3x3 in the RGCL; not in the paper) | — | — | 28.0000 |" in extra
  assert "Protocol: P; D." in text
  with pytest.raises(ValueError, match="ROW=WORKDIR"):
    tables._parse_workdirs("wo_everything=/w")


def test_paper_tables_check_each_workdirs_ablation():
  tables = _load(ROOT / "experiments" / "paper_tables.py", "paper_tables_under_test2")
  from configs import ablations  # pylint: disable=g-import-not-at-top
  assert tables.config_mismatches("ours", ablations.default.get_config()) == []
  assert tables.config_mismatches("wo_rgcl", ablations.get_config("wo_rgcl")) == []
  (bad,) = tables.config_mismatches("wo_rgcl", ablations.default.get_config())
  assert bad.startswith("model.use_rgcl=True")
  assert len(tables.config_mismatches("ours", ablations.get_config("wo_content"))) == 1
  (bad,) = tables.config_mismatches("ours", ablations.get_config("wo_rgcl_kernels"))
  assert bad.startswith("model.rgcl_kernels='square'")
  older = ablations.default.get_config()  # a config.json written before rgcl_kernels existed
  del older.model["rgcl_kernels"]
  assert tables.config_mismatches("ours", older) == []


class _Scale:
  """A stand-in generator, y = a * x: evaluation tests without training."""
  dtype = None

  def apply(self, variables, x):
    return x * variables["params"]["a"]


def _family_source(with_family=True):
  """8 random pairs over 3 blur families, family order shake, linear, defocus."""
  rng = np.random.default_rng(3)
  families = ["shake", "shake", "linear", "shake", "defocus", "linear", "defocus", "shake"]
  source = []
  for i, family in enumerate(families):
    sharp = rng.integers(0, 256, (24, 20, 3), np.uint8)
    blur = np.clip(sharp + rng.normal(0, 5 + 5 * i, sharp.shape), 0, 255).astype(np.uint8)
    ex = {"blur": blur, "sharp": sharp, "name": f"photo{i % 2}/{family}{i}.png"}
    if with_family:
      ex["family"] = family
    source.append(ex)
  return source


def test_by_family_means_table_and_grids(tmp_path):
  out = tmp_path / "eval"
  params = {"a": np.float32(0.9)}
  summary = evaluation.evaluate_generator(_Scale(), params, _family_source(), output_dir=str(out),
                                        dataset="synthetic_online", num_grids=2, progress=False)
  rows = read_csv(out / evaluation.CSV_FILE)
  assert list(rows[0]) == list(evaluation.CSV_FIELDS) + ["family"]
  by_family = json.loads((out / evaluation.SUMMARY_FILE).read_text())["by_family"]
  assert list(by_family) == ["shake", "linear", "defocus", evaluation.FAMILY_ALL]
  assert by_family == summary["by_family"]
  for family, m in by_family.items():
    rs = [r for r in rows if family in (r["family"], evaluation.FAMILY_ALL)]
    assert m["num_images"] == len(rs)
    for k in evaluation.METRIC_KEYS:
      assert m[k] == pytest.approx(np.mean([float(r[k]) for r in rs]), abs=1e-9)
    gains = [float(r["psnr"]) - float(r["blurry_psnr"]) for r in rs]
    assert m["psnr_gain"] == pytest.approx(np.mean(gains), abs=1e-9)
    assert m["worst_psnr_gain"] == pytest.approx(min(gains), abs=1e-9)
  assert by_family["all"]["psnr"] == pytest.approx(summary["means"]["psnr"], abs=1e-12)

  text = evaluation.format_result(summary)
  lines = text.splitlines()
  for family, m in by_family.items():
    (line,) = [x for x in lines if x.split()[:1] == [family]]
    assert line.split() == [family, str(m["num_images"]), f"{m['blurry_psnr']:.2f}",
                            f"{m['psnr']:.2f}", f"{m['psnr_gain']:+.2f}",
                            f"{m['blurry_ssim']:.4f}", f"{m['ssim']:.4f}",
                            f"{m['worst_psnr_gain']:+.2f}"]
  assert "synthetic_online held-out set" in text  # the dataset's protocol line

  # num_grids=2 but 3 families: each family's first image, in data order.
  grids = sorted(os.listdir(out / evaluation.GRID_DIR))
  assert grids == ["00_photo0_shake0.png", "01_photo0_linear2.png", "02_photo0_defocus4.png"]
  assert summary["files"]["grids"] == [os.path.join(evaluation.GRID_DIR, g) for g in grids]
  assert np.asarray(Image.open(out / evaluation.GRID_DIR / grids[0])).shape == (24, 60, 3)


def test_without_families_nothing_changes(tmp_path):
  out = tmp_path / "eval"
  params = {"a": np.float32(0.9)}
  summary = evaluation.evaluate_generator(_Scale(), params, _family_source(with_family=False),
                                        output_dir=str(out), num_grids=2, progress=False)
  rows = read_csv(out / evaluation.CSV_FILE)
  assert list(rows[0]) == list(evaluation.CSV_FIELDS) and len(rows) == 8
  assert "by_family" not in summary
  assert "by_family" not in json.loads((out / evaluation.SUMMARY_FILE).read_text())
  assert len(evaluation.format_result(summary).splitlines()) == 2  # means + protocol
  assert sorted(os.listdir(out / evaluation.GRID_DIR)) == ["00_photo0_shake0.png",
                                                         "01_photo1_shake1.png"]
  with pytest.raises(ValueError, match="'family'"):
    mixed = _family_source(with_family=False) + _family_source()[:1]
    evaluation.evaluate_generator(_Scale(), params, mixed, output_dir=str(tmp_path / "m"),
                                progress=False)


def test_cli_shipped_model(tmp_path, generator_workdir, capsys, monkeypatch):
  """--model evaluates a shipped model (packed into a tmp root); flag conflicts exit 2."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models import Generator  # pylint: disable=g-import-not-at-top
  tiny = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)
  params = jax.jit(Generator(**tiny).init)(jax.random.key(0, impl="rbg"),
                                           jnp.zeros((1, 16, 16, 3)))["params"]
  workdir = str(tmp_path / "workdir")
  generator_workdir(workdir, tiny, params, 4)
  root = str(tmp_path / "models")
  pretrained.pack(workdir, "tiny", root=root)
  monkeypatch.setenv(pretrained.ENV_VAR, root)

  folder = tmp_path / "photos"
  folder.mkdir()
  photo = np.random.default_rng(0).integers(0, 256, (36, 44, 3), np.uint8)
  Image.fromarray(photo).save(folder / "a.png")
  base = ["--dataset", "blur_only", "--path", str(folder), "--data_dir", str(tmp_path / "tfds"),
          "--no-progress"]
  out = tmp_path / "out"
  rc = evaluate.main(base + ["--model", "tiny", "--output_dir", str(out)])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert "restored generator from shipped model tiny" in captured.err
  summary = json.loads((out / evaluation.SUMMARY_FILE).read_text())
  assert summary["model"] == "tiny" and "workdir" not in summary
  assert summary["step"] == 4  # the step the model was packed from
  module, loaded = pretrained.load("tiny")  # packed from a workdir without inference options
  np.testing.assert_array_equal(
      np.asarray(Image.open(out / evaluation.OUTPUT_DIR / "a.png")),
      inference.deblur_image(inference.make_deblur_fn(module, loaded), photo))
  assert summary["inference"]["self_ensemble"] == "off"
  assert summary["inference"]["low_freq_sigma"] == 0.0

  o2 = ["--output_dir", str(tmp_path / "o2")]
  assert evaluate.main(base + ["--workdir", workdir, "--model", "tiny"] + o2) == 2
  assert "not both" in capsys.readouterr().err
  assert evaluate.main(base + ["--model", "tiny", "--step", "4"] + o2) == 2
  assert "--step" in capsys.readouterr().err
  assert evaluate.main(base + o2) == 2  # the default model is not in this root
  err = capsys.readouterr().err
  assert "cannot restore a generator" in err and pretrained.DEFAULT_MODEL in err
  assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------
# HIDE and RealBlur through the CLI, on small trees in their published layouts.


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory, generator_workdir):
  """A workdir holding a tiny random generator (no training)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models import Generator  # pylint: disable=g-import-not-at-top
  tiny = dict(base_features=4, gradientnet_features=4, num_mbrbs=1)
  params = jax.jit(Generator(**tiny).init)(jax.random.key(1, impl="rbg"),
                                           jnp.zeros((1, 16, 16, 3)))["params"]
  workdir = str(tmp_path_factory.mktemp("tiny_workdir"))
  generator_workdir(workdir, tiny, params, 3)
  return workdir


def _benchmark_trees(manual):
  """2 HIDE test pairs and 2 RealBlur-J test pairs (+1 train pair) under one manual dir.

  Returns {dataset: {name: (blur, sharp)}}, the names the builders give."""
  from flax_gradnet.data import builders  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)

  def pair(*paths):
    sharp = rng.integers(0, 256, (28, 36, 3), np.uint8)
    blur = np.clip(sharp + rng.normal(0, 12, sharp.shape), 0, 255).astype(np.uint8)
    for path, image in zip(paths, (blur, sharp)):
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(path)
    return blur, sharp

  hide = manual / "HIDE_dataset"
  trees = {"hide": {f"{sub}/{f}": pair(hide / "test" / sub / f, hide / "GT" / f)
                    for sub, f in (("test-close-ups", "3fromGOPR0981.png"),
                                   ("test-long-shot", "5fromGOPR1044.png"))},
           "realblur_j": {}}
  folder = builders.REALBLUR_FOLDERS["j"]
  for split, scene, ks in (("train", "scene001", (1,)), ("test", "scene230", (4, 2))):
    lines = []
    for k in ks:
      blur_rel, gt_rel = f"{folder}/{scene}/blur/blur_{k}.png", f"{folder}/{scene}/gt/gt_{k}.png"
      trees["realblur_j"][f"{scene}/blur/blur_{k}.png"] = pair(manual / blur_rel, manual / gt_rel)
      lines.append(f"{gt_rel} {blur_rel}\n")
    (manual / builders.realblur_list_file("j", split)).write_text("".join(lines))
  del trees["realblur_j"]["scene001/blur/blur_1.png"]  # train, not evaluated
  return trees


def test_cli_hide_and_realblur(tiny_workdir, tmp_path, capsys):
  """The right pairs reach the metrics (blurry PSNR/SSIM = scikit-image's on the files) and the
  published protocol is printed and recorded; a missing data set is one clear error line."""
  manual = tmp_path / "manual"
  trees = _benchmark_trees(manual)
  base = ["--workdir", tiny_workdir, "--manual_dir", str(manual), "--data_dir",
          str(tmp_path / "tfds"), "--no-progress", "--no-save_outputs"]
  for dataset, pairs in trees.items():
    out = tmp_path / dataset
    rc = evaluate.main(base + ["--dataset", dataset, "--output_dir", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    protocol = evaluation.dataset_protocol(dataset)
    assert f"; {protocol}" in captured.out
    assert json.loads((out / evaluation.SUMMARY_FILE).read_text())["dataset_protocol"] == protocol
    rows = {r["name"]: r for r in read_csv(out / evaluation.CSV_FILE)}
    assert sorted(rows) == sorted(pairs)
    for name, (blur, sharp) in pairs.items():
      p, s = skimage_metrics(blur, sharp)
      assert float(rows[name]["blurry_psnr"]) == pytest.approx(p, abs=1e-3)
      assert float(rows[name]["blurry_ssim"]) == pytest.approx(s, abs=1e-4)
  assert "2025 pairs" in evaluation.dataset_protocol("hide")
  for variant in ("j", "r"):
    text = evaluation.dataset_protocol(f"realblur_{variant}")
    assert f"RealBlur_{variant.upper()}_<split>_list.txt" in text
    assert "WITHOUT the authors' alignment" in text and "NOT comparable" in text

  rc = evaluate.main(base + ["--dataset", "realblur_r", "--output_dir", str(tmp_path / "r")])
  err = capsys.readouterr().err
  assert rc == 2 and "cannot open dataset 'realblur_r'" in err and "RealBlur-R folder" in err
  rc = evaluate.main(base[:2] + ["--manual_dir", str(tmp_path / "empty"), "--dataset", "hide",
                                 "--data_dir", str(tmp_path / "tfds2"),
                                 "--output_dir", str(tmp_path / "h")])
  err = capsys.readouterr().err
  assert rc == 2 and "cannot open dataset 'hide'" in err and "HIDE_dataset.zip" in err


def test_help_states_the_benchmark_protocols():
  text = " ".join(evaluate._parser().format_help().split())
  for name in ("hide", "realblur_j", "realblur_r"):
    assert name in text
  assert "measured WITHOUT the RealBlur alignment" in text
  assert "NOT comparable with published RealBlur tables" in text
  assert "test-close-ups/ + test-long-shot/ (2025 pairs)" in text


def test_output_and_workdir_paths_keep_uris(tmp_path, capsys, monkeypatch):
  """A local output folder is expanded and made absolute; a URI output folder is
  refused (the reports are local writes), never turned into ./gs:/...; a URI
  workdir is recorded as given."""
  monkeypatch.chdir(tmp_path)
  assert evaluation.local_output_dir("o") == str(tmp_path.resolve() / "o")
  assert evaluation.local_output_dir("~/o") == os.path.join(os.path.expanduser("~"), "o")
  with pytest.raises(ValueError, match="is a URI"):
    evaluation.local_output_dir("gs://bucket/eval")
  assert evaluation.workdir_name("gs://bucket/run") == "gs://bucket/run"
  assert evaluation.workdir_name("run") == str(tmp_path.resolve() / "run")
  rc = evaluate.main(["--workdir", "gs://bucket/run", "--dataset", "synthetic",
                      "--output_dir", "gs://bucket/eval"])
  assert rc == 2 and "--output_dir gs://bucket/eval is a URI" in capsys.readouterr().err
  assert not (tmp_path / "gs:").exists()
