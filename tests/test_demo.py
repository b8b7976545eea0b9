"""Tests of the demo's per-family numbers (the demo itself trains for minutes: not run here)."""

import numpy as np
import pytest

from flax_gradnet import demo

MODELS = (demo.QUICKSTART, demo.SHIPPED)


def _rows():
  rng = np.random.default_rng(0)
  rows = []
  for photo in ("cat", "rocket", "gravel"):
    for family in ("shake", "defocus"):
      r = {"name": f"{photo}/{family}.png", "photo": photo, "family": family,
           "blurry_psnr": rng.uniform(20, 30), "blurry_ssim": rng.uniform(0.4, 0.8)}
      for m in MODELS:
        r[f"{m}_psnr"] = r["blurry_psnr"] + rng.uniform(-1, 3)
        r[f"{m}_ssim"] = r["blurry_ssim"] + rng.uniform(-0.05, 0.1)
      rows.append(r)
  return rows


def test_family_table_means_gains_and_worst_images():
  rows = _rows()
  table = demo.family_table(rows, MODELS)
  assert list(table) == ["shake", "defocus", demo.ALL]
  for family, e in table.items():
    rs = [r for r in rows if family in (r["family"], demo.ALL)]
    assert e["num_images"] == len(rs) == (6 if family == demo.ALL else 3)
    assert e["blurry"]["psnr"] == pytest.approx(np.mean([r["blurry_psnr"] for r in rs]))
    assert e["blurry"]["ssim"] == pytest.approx(np.mean([r["blurry_ssim"] for r in rs]))
    for m in MODELS:
      gains = np.array([r[f"{m}_psnr"] - r["blurry_psnr"] for r in rs])
      assert e[m]["psnr"] == pytest.approx(np.mean([r[f"{m}_psnr"] for r in rs]))
      assert e[m]["ssim"] == pytest.approx(np.mean([r[f"{m}_ssim"] for r in rs]))
      assert e[m]["psnr_gain"] == pytest.approx(gains.mean())
      assert e[m]["worst_psnr_gain"] == pytest.approx(gains.min())
      assert e[m]["worst_image"] == rs[int(np.argmin(gains))]["name"]


def test_format_table_rows_and_one_model():
  rows = _rows()
  table = demo.family_table(rows, MODELS)
  lines = demo.format_table(table, MODELS)
  for family, e in table.items():
    (line,) = [x for x in lines if x.split()[:1] == [family]]
    q, s = e[demo.QUICKSTART], e[demo.SHIPPED]
    assert line.split() == [
        family, str(e["num_images"]), f"{e['blurry']['psnr']:.2f}",
        f"{q['psnr']:.2f}", f"({q['psnr_gain']:+.2f})", f"{s['psnr']:.2f}",
        f"({s['psnr_gain']:+.2f})", f"{e['blurry']['ssim']:.4f}", f"{q['ssim']:.4f}",
        f"{s['ssim']:.4f}"]
  assert lines[-1].startswith("Worst per-image PSNR gain: quickstart ")
  assert table[demo.ALL][demo.SHIPPED]["worst_image"] in lines[-1]

  # Without a shipped model: the blurry input and quickstart only.
  only = demo.family_table(rows, (demo.QUICKSTART,))
  assert demo.SHIPPED not in only[demo.ALL]
  lines = demo.format_table(only, (demo.QUICKSTART,))
  assert "shipped" not in "\n".join(lines)
  (all_line,) = [x for x in lines if x.startswith(demo.ALL)]
  assert len(all_line.split()) == 7


def test_each_model_is_measured_under_its_own_options(tmp_path, monkeypatch):
  """The held-out comparison deblurs every net under its own recorded options
  (`demo.Net.options`), as `deblur` would by default."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  from flax_gradnet import inference, metrics  # pylint: disable=g-import-not-at-top
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models import Generator  # pylint: disable=g-import-not-at-top
  model = Generator(base_features=4, gradientnet_features=4, num_mbrbs=1)
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 16, 16, 3)))["params"]
  photo = skimage.data.chelsea()[60:92, 100:136].copy()
  real = online.heldout_pairs
  one_pair = lambda: real(families=("gaussian",), photos={"cat": photo})
  monkeypatch.setattr(online, "heldout_pairs", one_pair)
  nets = {demo.QUICKSTART: demo.Net(model, params, inference.PAPER_PROTOCOL, "paper"),
          demo.SHIPPED: demo.Net(model, params,
                                 inference.Options(self_ensemble="mean", low_freq_sigma=4.0),
                                 "recorded")}
  (row,) = demo.evaluate_heldout(nets, str(tmp_path))
  (ex,) = one_pair()
  for key, net in nets.items():
    out = inference.deblur_image(inference.deblur_fn_for(model, params, net.options), ex["blur"])
    want = float(metrics.psnr(out, ex["sharp"], data_range=255.0))
    assert row[f"{key}_psnr"] == pytest.approx(want, abs=1e-4), key
  assert row[f"{demo.QUICKSTART}_psnr"] != row[f"{demo.SHIPPED}_psnr"]
  assert (tmp_path / demo.HELDOUT_DIR / "cat_gaussian.png").exists()


def test_a_uri_workdir_is_refused_before_training(tmp_path):
  """The demo writes its pictures with local file operations: a URI --workdir
  exits 2 at once, and is never made a local ./gs:/... folder."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  r = subprocess.run([sys.executable, "-m", "flax_gradnet.demo", "--workdir=gs://bucket/demo"],
                     cwd=tmp_path, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 2, r.stderr[-2000:]
  assert "error: --workdir gs://bucket/demo is a URI" in r.stderr
  assert not (tmp_path / "gs:").exists()
