"""Rebuild the paper's Tables 1, 3, 4 and 5 beside the paper's numbers (markdown).

    python experiments/paper_tables.py table1 --workdir=workdirs/paper \
        --manual_dir=/data/gopro --path=/data/kohler --output=tables/table1.md
    python experiments/paper_tables.py table3 --runs=3 --output=tables/table3.md
    python experiments/paper_tables.py table45 --manual_dir=/data/gopro \
        --workdirs=ours=workdirs/paper,wo_content=workdirs/wo_content,wo_gradient=workdirs/wo_gradient,wo_rgcl=workdirs/wo_rgcl,wo_mbrbs=workdirs/wo_mbrbs,wo_gradientnet=workdirs/wo_gradientnet \
        --output=tables/table45.md

Tables 1, 4, 5 evaluate trained workdirs with `flax_gradnet.evaluation.evaluate_workdir`
(RGB PSNR/SSIM on uint8 outputs, GOPRO config 'blur', whole images, the
generator's output as it is, i.e. `evaluate --self_ensemble=off --low_freq_sigma=0`; the
per-image CSVs, grids and summaries go to `--eval_dir/<table>/<row>/`).
Table 3 needs no weights: XLA-counted FLOPs of the default generator
(`cost.forward_cost`) and the measured seconds of one 1280x720 forward after
compilation, on whatever device JAX uses here. docs/evaluation.md has the
results measured so far and what is left to run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from configs import ablations
from flax_gradnet import atomic

# Paper numbers: (PSNR dB, SSIM).
PAPER_TABLE1 = {"gopro": (29.2252, 0.8714), "kohler": (21.3728, 0.6602)}
PAPER_TABLE3 = {"gflops": 446.98, "seconds": 0.7}
PAPER_TABLE4 = {"wo_content": (26.3751, 0.7921), "wo_gradient": (28.7011, 0.8617),
                "ours": (29.2252, 0.8714)}
PAPER_TABLE5 = {"wo_rgcl": (29.0429, 0.8691), "wo_mbrbs": (29.0859, 0.884),
                "wo_gradientnet": (27.8708, 0.8324), "ours": (29.2252, 0.8714)}
# Rows that the paper does not have, reported beside its Table 5 (None: no
# paper numbers): the RGCL kept with a 3x3 conv in place of its 1x3 + 3x1 pair.
EXTRA_TABLE5 = {"wo_rgcl_kernels": None}
ROW_NAMES = {"ours": "Ours", "wo_content": "w/o content", "wo_gradient": "w/o gradient",
             "wo_rgcl": "w/o RGCL", "wo_rgcl_kernels": "w/o RGCL kernels (3x3 in the RGCL; not in the paper)",
             "wo_mbrbs": "w/o MBRBs", "wo_gradientnet": "w/o GradientNet",
             "gopro": "GOPRO test", "kohler": "Köhler"}


def _row(label: str, paper: tuple[float, float] | None, summary: dict | None) -> str:
  ref = f"{paper[0]:.4f} | {paper[1]:.4f}" if paper else "— | —"
  if summary is None or not summary.get("means"):
    return f"| {label} | {ref} | not run | not run | | | |"
  m = summary["means"]
  delta = f"{m['psnr'] - paper[0]:+.4f}" if paper else ""
  return (f"| {label} | {ref} | {m['psnr']:.4f} | {m['ssim']:.4f} | "
          f"{delta} | {summary['num_images']} | {summary['step']} |")


def metric_table(title: str, paper: dict[str, tuple[float, float]],
                 results: dict[str, dict | None], command: str) -> str:
  """A markdown table: paper PSNR/SSIM beside the measured ones, with the protocol."""
  lines = [f"## {title}", "",
           "| row | paper PSNR | paper SSIM | measured PSNR | measured SSIM | Δ PSNR | images | "
           "step |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  for key, p in paper.items():
    lines.append(_row(ROW_NAMES.get(key, key), p, results.get(key)))
  lines.append("")
  protocols = sorted({f"{s['protocol']}; {s['dataset_protocol']}"
                      for s in results.values() if s})
  for p in protocols:
    lines.append(f"Protocol: {p}.")
  workdirs = [f"`{k}`: {s.get('workdir')}" for k, s in results.items() if s]
  if workdirs:
    lines.append("Workdirs: " + ", ".join(workdirs) + ".")
  lines += ["", f"Command: `{command}`", ""]
  return "\n".join(lines)


def _evaluate(workdir: str, dataset: str, *, data_dir: str, manual_dir: str | None,
              eval_dir: str, num_images: int, dtype: str | None, **builder_kwargs) -> dict:
  from flax_gradnet.data import pipeline  # pylint: disable=g-import-not-at-top
  kohler_best = builder_kwargs.pop("kohler_best_frame", False)
  source = pipeline.get_source(dataset, "test", data_dir=os.path.expanduser(data_dir),
                               manual_dir=manual_dir, **builder_kwargs)
  # Imported here: Table 3 needs neither TFDS nor orbax (it runs on a lent
  # accelerator that has neither installed).
  from flax_gradnet import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.evaluate_workdir(
      workdir, source, output_dir=eval_dir, dtype=dtype, dataset=dataset,
      num_images=num_images, save_outputs=False, num_grids=2,
      kohler_frame=builder_kwargs.get("frame", "middle"),
      kohler_frames_dir=builder_kwargs.get("path") if kohler_best else None,
      extra_summary={"split": "test"})


def table1(args) -> str:
  results = {}
  common = dict(data_dir=args.data_dir, num_images=args.num_images, dtype=args.dtype)
  results["gopro"] = _evaluate(args.workdir, args.gopro_dataset,
                               manual_dir=args.manual_dir,
                               eval_dir=os.path.join(args.eval_dir, "table1", "gopro"), **common)
  if args.path:
    results["kohler"] = _evaluate(
        args.workdir, "kohler", manual_dir=None,
        eval_dir=os.path.join(args.eval_dir, "table1", "kohler"),
        path=os.path.abspath(os.path.expanduser(args.path)),
        frame=args.kohler_frame, kohler_best_frame=args.kohler_protocol == "best_frame", **common)
  return metric_table("Table 1: GOPRO and Köhler (Ours)", PAPER_TABLE1, results,
                      " ".join(["python experiments/paper_tables.py"] + sys.argv[1:]))


def _parse_workdirs(spec: str) -> dict[str, str]:
  out = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    key, sep, path = item.partition("=")
    rows = {**PAPER_TABLE4, **PAPER_TABLE5, **EXTRA_TABLE5}
    if not sep or key not in rows:
      raise ValueError(f"--workdirs entries are ROW=WORKDIR with ROW in {sorted(rows)}, "
                       f"got {item!r}")
    out[key] = path
  if not out:
    raise ValueError("--workdirs is empty")
  return out


def config_mismatches(key: str, config) -> list[str]:
  """How a workdir's config differs from the row's ablation (configs/ablations.py)."""
  default = ablations.default.get_config()
  expected = default if key == "ours" else ablations.get_config(key)
  keys = {k for a in ablations.ABLATIONS.values() for k in a}
  out = []
  for k in sorted(keys):
    want, have, fallback = expected, config, default
    for part in k.split("."):
      want, fallback = want[part], fallback[part]
      have = have.get(part) if have is not None else None
    # A field missing from an older workdir's config.json had the default value.
    have = fallback if have is None else have
    if have != want:
      out.append(f"{k}={have!r} (the '{key}' row expects {want!r})")
  return out


def table45(args) -> str:
  workdirs = _parse_workdirs(args.workdirs)
  notes = []
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for key, w in workdirs.items():  # fail before any long evaluation
    bad = config_mismatches(key, workdir_lib.load_config(w))
    if bad:
      notes.append(f"WARNING: {w} is not the '{key}' ablation: " + "; ".join(bad) + ".")
      print(notes[-1], file=sys.stderr)
  results = {}
  for key, w in workdirs.items():
    print(f"evaluating {key}: {w}", file=sys.stderr)
    results[key] = _evaluate(w, args.gopro_dataset, data_dir=args.data_dir,
                             manual_dir=args.manual_dir, num_images=args.num_images,
                             dtype=args.dtype, eval_dir=os.path.join(args.eval_dir, "table45", key))
  command = " ".join(["python experiments/paper_tables.py"] + sys.argv[1:])
  return "\n".join(notes + [""] * bool(notes) + [
      metric_table("Table 4: loss ablations on GOPRO test", PAPER_TABLE4,
                   {k: results.get(k) for k in PAPER_TABLE4}, command),
      metric_table("Table 5: building-block ablations on GOPRO test", {**PAPER_TABLE5,
                                                                       **EXTRA_TABLE5},
                   {k: results.get(k) for k in {**PAPER_TABLE5, **EXTRA_TABLE5}}, command)])


def device_description() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  text = f"{d.platform}: {d.device_kind}"
  if d.platform == "cpu":
    model = platform.processor() or ""
    try:
      with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
      pass
    text += f" ({model or 'unknown CPU'}, {os.cpu_count()} logical cores visible)"
  return text


def time_forward(height: int, width: int, runs: int, dtype: str = "float32",
                 variant: dict | None = None) -> dict:
  """Seconds of one jit-compiled generator forward on [1, H, W, 3], after compilation."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models import Generator  # pylint: disable=g-import-not-at-top
  model = Generator(**(variant or {}), dtype=jnp.dtype(dtype))
  # Parameters do not depend on the image size: init on a small image (cheap).
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, height, width, 3), jnp.float32, -1.0, 1.0)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  t = time.perf_counter()
  apply(params, x).block_until_ready()  # compile + first run
  first = time.perf_counter() - t
  seconds = []
  for i in range(runs):
    t = time.perf_counter()
    apply(params, x).block_until_ready()
    seconds.append(time.perf_counter() - t)
    print(f"  run {i + 1}/{runs}: {seconds[-1]:.2f} s", file=sys.stderr)
  return {"first_call_s": first, "seconds": seconds, "mean_s": float(np.mean(seconds)),
          "std_s": float(np.std(seconds))}


def table3(args) -> str:
  from flax_gradnet import cost  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models import Generator  # pylint: disable=g-import-not-at-top
  n_params, flops = cost.forward_cost(Generator(**cost.PAPER_MODEL), args.height,
                                         args.width)
  timing = time_forward(args.height, args.width, args.runs, args.dtype, cost.PAPER_MODEL)
  macs = flops / 2e9
  command = " ".join(["python experiments/paper_tables.py"] + sys.argv[1:])
  runs = ", ".join(f"{s:.2f}" for s in timing["seconds"])
  return "\n".join([
      f"## Table 3: cost of the default generator on one {args.width}x{args.height} image", "",
      "| | paper (Ours) | measured |", "|---|---:|---:|",
      f"| 'FLOPs' | {PAPER_TABLE3['gflops']} G | {macs:,.2f} G multiply-adds "
      f"({flops / 1e9:,.2f} G XLA FLOPs) |",
      f"| seconds per image | {PAPER_TABLE3['seconds']} (GPU, unnamed) | "
      f"{timing['mean_s']:.2f} ± {timing['std_s']:.2f} (mean ± std of {args.runs} run(s)) |",
      f"| parameters | not given | {n_params:,} |", "",
      f"Device: {device_description()}; compute dtype {args.dtype}; batch 1; random input "
      f"(time does not depend on the values). Runs after compilation: {runs} s; the first "
      f"call (compile + run) took {timing['first_call_s']:.1f} s.",
      "FLOPs: XLA cost analysis of the lowered forward (`flax_gradnet.cost.forward_cost`), "
      "which counts a multiply-add as 2 FLOPs; the paper's figure reads as multiply-adds "
      "(see README).", "", f"Command: `{command}`", ""])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="table", required=True)

  def common(p, needs_gopro: bool):
    p.add_argument("--output", required=True, help="markdown file to write (atomically)")
    if needs_gopro:
      p.add_argument("--manual_dir", default=None,
                     help="TFDS manual dir holding GOPRO_Large/ or GOPRO_Large.zip")
      p.add_argument("--gopro_manual_dir", dest="manual_dir", help=argparse.SUPPRESS)  # old name
      p.add_argument("--gopro_dataset", default="gopro",
                     help="dataset standing in for GOPRO test (default gopro = config 'blur'; "
                          "'synthetic' for a smoke test)")
      p.add_argument("--data_dir", default="~/tensorflow_datasets")
      p.add_argument("--eval_dir", default="paper_tables_eval",
                     help="per-row evaluation folders (CSV, grids, summary)")
      p.add_argument("--num_images", type=int, default=0, help="first N test images (0 = all)")
      p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)

  p1 = sub.add_parser("table1", help="GOPRO test and Köhler PSNR/SSIM of one workdir")
  p1.add_argument("--workdir", required=True)
  p1.add_argument("--path", default=None, help="Köhler folder (skipped if not given)")
  p1.add_argument("--kohler_path", dest="path", help=argparse.SUPPRESS)  # old name
  p1.add_argument("--kohler_protocol", choices=("best_frame", "frame"), default="best_frame",
                  help="best_frame: best-PSNR GroundTruth frame per image (the literature's "
                       "choice, without alignment); frame: the one --kohler_frame")
  p1.add_argument("--kohler_frame", default="middle")
  common(p1, True)
  p3 = sub.add_parser("table3", help="FLOPs and seconds per 1280x720 image")
  p3.add_argument("--runs", type=int, default=3, help="timed runs after compilation")
  p3.add_argument("--height", type=int, default=720)
  p3.add_argument("--width", type=int, default=1280)
  p3.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  common(p3, False)
  p45 = sub.add_parser("table45", help="ablation workdirs on GOPRO test (Tables 4 and 5)")
  p45.add_argument("--workdirs", required=True,
                   help="ROW=WORKDIR,... with ROW in ours, wo_content, wo_gradient, wo_rgcl, "
                        "wo_rgcl_kernels (not in the paper), wo_mbrbs, wo_gradientnet")
  common(p45, True)
  args = parser.parse_args(argv)

  try:
    text = {"table1": table1, "table3": table3, "table45": table45}[args.table](args)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  atomic.atomic_write_text(args.output, text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
