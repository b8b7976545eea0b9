"""Export a trained generator as serialized `jax.export` artifacts that need only jax to run.

    python -m flax_gradnet.export --workdir=W --output=gen.jaxexport            # any H x W >= 8
    python -m flax_gradnet.export --workdir=W --output=gen.jaxexport --height=720 --width=1280
    python -m flax_gradnet.export --workdir=W --step=best --weights=raw --output=gen.jaxexport
    python -m flax_gradnet.export --model=gradnet_s_lf --output=gen.jaxexport   # a shipped model

`--step` takes a step or `best` (the highest held-out PSNR training recorded);
`--weights` ema|raw picks the checkpoint's moving average or raw generator
weights (default: the EMA when the checkpoint has one). `--model` exports a
model shipped with the package instead of a workdir's (the default when
`--workdir` is absent: `pretrained.DEFAULT_MODEL`). Flags and exit statuses
follow `flax_gradnet.cli` (0 written, 2 nothing written).

Loading (no flax_gradnet, no flax; only jax and numpy):

    from flax_gradnet.export import load_exported   # or copy the function: it is self-contained
    deblur = load_exported("gen.jaxexport")
    y = deblur(x)    # x: float32 [N, H, W, C] in [-1, 1] -> same shape
                     # (C = the model's channels: 3 RGB, 1 grayscale; meta["channels"])

The file is a zip holding `meta.json`, the generator parameters once
(`params.npz`, leaves in tree order) and one or more serialized
`jax.export.Exported` functions `f(param_leaves, images)`; parameters are an
argument rather than constants so several functions can share them.

The artifact is the generator alone: one pass with the statistics it was
trained with. `meta.json`'s `inference` records the model's own inference
options (`inference.Options`, from its config.json; the paper's protocol when
it records none), which the caller applies around it: `low_freq_sigma` on the
host (`inference.keep_input_low_frequencies(y, x, sigma)`), a self-ensemble
or local statistics through flax_gradnet.

Shape polymorphism. The batch dimension is always symbolic. Symbolic H and W
cannot be traced through the generator as written: its `min(h, w) > 3` test
(choosing the padding mode) needs to order h and w, and its `jnp.pad` to a
multiple of 4 needs concrete pad widths. The polymorphic export therefore holds
three functions whose shapes make both decidable -- square `(4s, 4s)`,
portrait `(4w + 4d, 4w)` and landscape `(4h, 4h + 4d)`, with s, w, h >= 2 --
and the loader reflect-pads the input to a multiple of 4 at the bottom/right
and crops the output, exactly as the generator itself does, so the result
equals the module's on every H x W >= 8. `--height/--width` exports one
fixed-size function instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from typing import Any, Callable

import jax
import jax.export  # `import jax` alone provides jax.export only from jax 0.8; setup.cfg allows 0.4.30
import jax.numpy as jnp
import numpy as np

from flax_gradnet import cli
from flax_gradnet.atomic import atomic_write

FORMAT = "flax_gradnet.export/1"
_POLY_SPECS = {  # name -> (shape spec, constraints); {c} = the model's channels
    "square": ("b, 4*s, 4*s, {c}", ("s >= 2",)),
    "portrait": ("b, 4*w + 4*d, 4*w, {c}", ("w >= 2",)),
    "landscape": ("b, 4*h, 4*h + 4*d, {c}", ("h >= 2",)),
}
MIN_POLY_SIDE = 8


DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def export_generator(model: Any, params: Any, *, height: int | None = None,
                     width: int | None = None,
                     platforms: tuple[str, ...] = DEFAULT_PLATFORMS,
                     options: Any = None) -> bytes:
  """Serializes `model` with `params` to the zip format `load_exported` reads.

  Args:
    model: a `flax_gradnet.models.Generator`.
    params: its parameters.
    height, width: export one function for this fixed size (symbolic batch);
      both None for the shape-polymorphic set.
    platforms: lower for all of these (one artifact; it runs on whichever of
      them loads it). Lowering needs no such device here.
    options: the model's `inference.Options` (`Restored.options`), recorded
      as meta.json's `inference` (not applied by the artifact); None: the
      paper's protocol.
  Returns:
    the file's bytes.
  """
  if (height is None) != (width is None):
    raise ValueError("give both --height and --width, or neither (polymorphic)")
  if options is None:
    from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
    options = inference.PAPER_PROTOCOL
  platforms = tuple(platforms)
  unknown = sorted(set(platforms) - set(KNOWN_PLATFORMS))
  if not platforms or unknown:
    raise ValueError(f"platforms must be a non-empty subset of {KNOWN_PLATFORMS}; got {platforms}")
  leaves, treedef = jax.tree_util.tree_flatten(params)

  def fn(param_leaves, x):
    p = jax.tree_util.tree_unflatten(treedef, param_leaves)
    return jnp.asarray(model.apply({"params": p}, x), jnp.float32)

  leaf_specs = [jax.ShapeDtypeStruct(np.shape(l), l.dtype) for l in leaves]
  jitted = jax.jit(fn)
  entries = {}
  channels = int(getattr(model, "channels", 3))
  if height is not None:
    if height < 1 or width < 1:
      raise ValueError(f"height and width must be positive, got {height}x{width}")
    shape = jax.export.symbolic_shape(f"b, {height}, {width}, {channels}")
    entries["fixed"] = jax.export.export(jitted, platforms=platforms)(
        leaf_specs, jax.ShapeDtypeStruct(shape, jnp.float32))
  else:
    for name, (spec, constraints) in _POLY_SPECS.items():
      shape = jax.export.symbolic_shape(spec.format(c=channels), constraints=constraints)
      entries[name] = jax.export.export(jitted, platforms=platforms)(
          leaf_specs, jax.ShapeDtypeStruct(shape, jnp.float32))
  meta = {"format": FORMAT, "kind": "fixed" if height is not None else "polymorphic",
          "height": height, "width": width, "channels": channels, "functions": sorted(entries),
          "platforms": list(next(iter(entries.values())).platforms),
          "num_params": int(sum(np.size(l) for l in leaves)),
          # The model's inference options, for the caller to apply around the artifact.
          "inference": options.to_dict()}
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
    z.writestr("meta.json", json.dumps(meta, indent=2))
    pbuf = io.BytesIO()
    np.savez(pbuf, **{f"leaf_{i:05d}": np.asarray(l) for i, l in enumerate(leaves)})
    z.writestr("params.npz", pbuf.getvalue())
    for name, exp in entries.items():
      z.writestr(f"{name}.jaxexport", bytes(exp.serialize()))
  return buf.getvalue()


def load_exported(path: str) -> Callable[[Any], jax.Array]:
  """Loads a file written by this module; needs only jax and numpy.

  Returns:
    `deblur(x)`: float32 [N, H, W, C] in [-1, 1] -> float32 [N, H, W, C], C the
    exported model's channels (`deblur.meta["channels"]`; 3 in files written
    before the field existed).
  """
  with zipfile.ZipFile(path) as z:
    meta = json.loads(z.read("meta.json"))
    if meta.get("format") != FORMAT:
      raise ValueError(f"{path}: not a {FORMAT} file (format={meta.get('format')!r})")
    with np.load(io.BytesIO(z.read("params.npz"))) as npz:
      leaves = [jnp.asarray(npz[k]) for k in sorted(npz.files)]
    fns = {name: jax.export.deserialize(bytearray(z.read(f"{name}.jaxexport")))
           for name in meta["functions"]}

  channels = meta.get("channels", 3)

  def deblur(x):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4 or x.shape[-1] != channels:
      raise ValueError(f"expected [N, H, W, {channels}] images, got shape {x.shape}")
    h, w = x.shape[1:3]
    if meta["kind"] == "fixed":
      if (h, w) != (meta["height"], meta["width"]):
        raise ValueError(f"{path} was exported for {meta['height']}x{meta['width']} images, "
                         f"got {h}x{w}")
      return fns["fixed"].call(leaves, x)
    if min(h, w) < MIN_POLY_SIDE:
      raise ValueError(f"images must be at least {MIN_POLY_SIDE}x{MIN_POLY_SIDE}, got {h}x{w}")
    # The generator's own padding: reflect at the bottom/right to a multiple of 4.
    ph, pw = (-h) % 4, (-w) % 4
    xp = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
    hp, wp = h + ph, w + pw
    name = "square" if hp == wp else ("portrait" if hp > wp else "landscape")
    return fns[name].call(leaves, xp)[:, :h, :w, :]

  deblur.meta = meta
  return deblur


def _atomic_write_bytes(path: str, data: bytes, overwrite: bool) -> None:
  atomic_write(path, lambda f: f.write(data), overwrite=overwrite, hint="--overwrite")


def _parser() -> argparse.ArgumentParser:
  p = cli.parser("python -m flax_gradnet.export",
                 "Write a trained generator as a serialized jax.export artifact.", __doc__)
  cli.add_restore_flags(p)
  cli.add_output_flag(p, "file to write (e.g. generator.jaxexport)")
  p.add_argument("--height", type=int, default=None, help="fixed image height (with --width)")
  p.add_argument("--width", type=int, default=None, help="fixed image width (with --height)")
  cli.add_dtype_flag(p)
  p.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS),
                 help=f"comma-separated platforms to lower for, of {KNOWN_PLATFORMS} "
                      "(one artifact for all; default %(default)s)")
  cli.add_overwrite_flag(p, "replace an existing --output")
  return p


def main(argv: list[str] | None = None) -> int:
  """Runs the tool; returns the exit status (0 written, 2 nothing written)."""
  parser = _parser()
  args = parser.parse_args(argv)
  if (args.height is None) != (args.width is None):
    parser.error("give both --height and --width, or neither (polymorphic)")
  platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
  if not platforms or set(platforms) - set(KNOWN_PLATFORMS):
    parser.error(f"--platforms must name some of {KNOWN_PLATFORMS}, got {args.platforms!r}")
  if (problem := cli.restore_flags_error(args)) is not None:
    return cli.fail(problem)

  from flax_gradnet import inference  # the shared restore path
  try:
    model, params, restored = inference.restore(
        args.workdir, model=args.model, step=args.step,
        dtype=None if args.dtype is None else jnp.dtype(args.dtype), weights=args.weights)
  except (FileNotFoundError, ValueError) as e:
    return cli.fail(f"cannot restore a generator from {cli.restore_source(args)}: {e}")
  if not args.overwrite and os.path.lexists(args.output):
    return cli.fail(f"{args.output} exists (pass --overwrite to replace it)")
  data = export_generator(model, params, height=args.height, width=args.width,
                          platforms=platforms, options=restored.options)
  _atomic_write_bytes(args.output, data, overwrite=args.overwrite)
  kind = f"{args.height}x{args.width}" if args.height else "any H x W >= 8"
  source = (f"step {restored.step} ({restored.weights} weights)" if args.workdir is not None
            else str(restored))
  print(f"wrote {args.output} ({len(data) / 2**20:.1f} MiB): {source}, {kind}, batch symbolic, "
        f"platforms {','.join(platforms)}")
  recorded = ("the model's recorded inference options" if restored.options_recorded
              else "the paper's protocol (the model records no options)")
  print(f"inference (meta.json 'inference'; the artifact is one generator pass, apply the rest "
        f"around it): {restored.options.describe()} ({recorded})")
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-export`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
