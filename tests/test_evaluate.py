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

from flax_gradnet import checkpoint, evaluate, metrics, train
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
  summary = evaluate.evaluate_workdir(workdir, test_source, output_dir=str(out),
                                      dataset="synthetic", y_channel=y_channel,
                                      crop_border=crop_border, num_grids=2, progress=False)
  rows = read_csv(out / evaluate.CSV_FILE)
  n = len(test_source)
  assert n >= 2 and len(rows) == n == summary["num_images"]
  assert list(rows[0]) == list(evaluate.CSV_FIELDS)
  on_disk = json.loads((out / evaluate.SUMMARY_FILE).read_text())
  for k in evaluate.METRIC_KEYS:
    assert on_disk["means"][k] == pytest.approx(np.mean([float(r[k]) for r in rows]), abs=1e-9)
    assert summary["means"][k] == on_disk["means"][k]
  assert on_disk["step"] == 2 and on_disk["workdir"] == os.path.abspath(workdir)
  assert on_disk["protocol"] == metrics.protocol_string(y_channel, crop_border)

  examples = {ex["name"]: ex for ex in pipeline.eval_iterator(test_source)}
  for r in rows:
    ex = examples[r["name"]]
    png = out / evaluate.OUTPUT_DIR / evaluate._safe_relpath(r["name"])
    deblurred = np.asarray(Image.open(png).convert("RGB"))
    assert deblurred.shape == ex["sharp"].shape
    p, s = skimage_metrics(deblurred, ex["sharp"], y_channel, crop_border)
    assert float(r["psnr"]) == pytest.approx(p, abs=1e-3)
    assert float(r["ssim"]) == pytest.approx(s, abs=1e-4)
    p, s = skimage_metrics(ex["blur"], ex["sharp"], y_channel, crop_border)
    assert float(r["blurry_psnr"]) == pytest.approx(p, abs=1e-3)
    assert float(r["blurry_ssim"]) == pytest.approx(s, abs=1e-4)

  grids = sorted(glob.glob(str(out / evaluate.GRID_DIR / "*.png")))
  assert len(grids) == 2
  g = np.asarray(Image.open(grids[0]))
  h, w = next(iter(examples.values()))["blur"].shape[:2]
  assert g.shape == (h, 3 * w, 3)  # blurry | deblurred | sharp
  assert glob.glob(str(out / "events.out.tfevents.*")), "no clu/TensorBoard events"


def test_outputs_equal_the_generator_applied_directly(trained, test_source, tmp_path):
  """The written PNG is the restored generator's output, quantized as metrics.quantize says."""
  workdir, _ = trained
  out = tmp_path / "eval"
  evaluate.evaluate_workdir(workdir, test_source, output_dir=str(out), num_images=1,
                            num_grids=0, progress=False)
  model, params, _ = checkpoint.restore_generator(workdir)
  ex = next(pipeline.eval_iterator(test_source))
  y = np.asarray(model.apply({"params": params}, ex["blur"][None].astype(np.float32) / 127.5 - 1))
  expected = np.clip(np.round((y[0].astype(np.float64) + 1) * 127.5), 0, 255)
  png = np.asarray(Image.open(out / evaluate.OUTPUT_DIR / evaluate._safe_relpath(ex["name"])))
  diff = np.abs(png.astype(np.float64) - expected)
  assert diff.max() <= 1 and np.mean(diff > 0) < 0.01  # float rounding at .5 boundaries only
  assert len(read_csv(out / evaluate.CSV_FILE)) == 1  # --num_images


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
                      "--no_progress"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert metrics.protocol_string(False, 0) in captured.out
  rows = read_csv(out / evaluate.CSV_FILE)
  assert len(rows) == len(src)
  mean = np.mean([float(r["psnr"]) for r in rows])
  assert f"PSNR {mean:.4f} dB" in captured.out
  assert not os.path.exists(out / evaluate.OUTPUT_DIR)  # --no-save_outputs


def test_blur_only_writes_outputs_and_no_metrics(trained, tmp_path, capsys):
  workdir, data_dir = trained
  folder = tmp_path / "photos"
  (folder / "sub").mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (40, 52, 3), np.uint8)).save(folder / "a.png")
  Image.fromarray(rng.integers(0, 256, (33, 30, 3), np.uint8)).save(folder / "sub" / "b.jpg")
  out = tmp_path / "out"
  rc = evaluate.main(["--workdir", workdir, "--dataset", "blur_only", "--path", str(folder),
                      "--data_dir", data_dir, "--output_dir", str(out), "--no_progress"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert "no metrics" in captured.out
  a = np.asarray(Image.open(out / evaluate.OUTPUT_DIR / "a.png"))
  b = np.asarray(Image.open(out / evaluate.OUTPUT_DIR / "sub" / "b.png"))
  assert a.shape == (40, 52, 3) and b.shape == (33, 30, 3)
  assert not os.path.exists(out / evaluate.CSV_FILE)
  summary = json.loads((out / evaluate.SUMMARY_FILE).read_text())
  assert summary["means"] == {} and summary["num_images"] == 2 and not summary["paired"]
  g = np.asarray(Image.open(sorted(glob.glob(str(out / evaluate.GRID_DIR / "*.png")))[0]))
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
  summary = evaluate.evaluate_workdir(workdir, source, output_dir=str(out), dataset="kohler",
                                      kohler_frames_dir=str(root), progress=False)
  assert "best" in summary["dataset_protocol"]
  (row,) = read_csv(out / evaluate.CSV_FILE)
  deblurred = np.asarray(Image.open(out / evaluate.OUTPUT_DIR / "Blurry1_1.png"))
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
    evaluate.evaluate_workdir(missing, [], output_dir=str(tmp_path / "o"))
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
  assert "Unknown dataset" in capsys.readouterr().err
  assert evaluate.main(base + ["--dataset", "synthetic", "--tile", "30"]) == 2
  assert "multiple of 4" in capsys.readouterr().err


def test_paper_table_markdown():
  tables = _load(ROOT / "experiments" / "paper_tables.py", "paper_tables_under_test")
  summary = {"means": {"psnr": 28.0, "ssim": 0.85}, "num_images": 1111, "step": 7,
             "protocol": "P", "dataset_protocol": "D", "workdir": "/w"}
  text = tables.metric_table("Table 5", tables.PAPER_TABLE5, {"ours": summary}, "cmd")
  assert "| Ours | 29.2252 | 0.8714 | 28.0000 | 0.8500 | -1.2252 | 1111 | 7 |" in text
  assert "| w/o RGCL | 29.0429 | 0.8691 | not run |" in text
  assert "Protocol: P; D." in text
  with pytest.raises(ValueError, match="ROW=WORKDIR"):
    tables._parse_workdirs("wo_everything=/w")


def test_paper_tables_check_each_workdirs_ablation():
  tables = _load(ROOT / "experiments" / "paper_tables.py", "paper_tables_under_test2")
  ablations = _load(ROOT / "configs" / "ablations.py", "eval_test_ablations")
  assert tables.config_mismatches("ours", ablations.default.get_config()) == []
  assert tables.config_mismatches("wo_rgcl", ablations.get_config("wo_rgcl")) == []
  (bad,) = tables.config_mismatches("wo_rgcl", ablations.default.get_config())
  assert bad.startswith("model.use_rgcl=True")
  assert len(tables.config_mismatches("ours", ablations.get_config("wo_content"))) == 1
