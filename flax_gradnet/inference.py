"""Deblurring whole images with a trained generator: the restore path of all CLI tools.

`restore` is the one way to get a generator, for the tools and for users: from
a training workdir (`checkpoints.restore_weights`: a checkpoint that trains is
a checkpoint that deblurs) or from a model shipped with the package
(`pretrained.load`, which builds the module through the same config path).

Inference settings are part of the model. `Options` holds every setting that
changes what a generator's deblurring returns (self-ensemble, the input's low
frequencies, local statistics, tiles) or how it runs (memory budget, which
weights). A model records its own in its config.json's `inference` field
(`Options.from_config`; a training config's `config.inference`, a shipped
model's config.json); a model that records none is deblurred under the paper's
protocol, `PAPER_PROTOCOL`: one pass of the generator, its output as it is.
`restore` returns them as `Restored.options`; the tools override them with
their flags (`resolve_options`: a flag given > the model's recorded setting >
the paper's protocol), `deblur_fn_for` builds the deblurring function of an
`Options` and `deblur_image` / `deblur_array` apply the rest.

Tiling. Whole-image inference needs activation memory proportional to the
image (a 4K frame at full width does not fit many accelerators). With
`tile=T` the image is cut into overlapping T x T tiles (stride `T - overlap`;
the last tile of a row/column is shifted back to end at the image border, so
every tile has the same shape and the function compiles once). Each tile's
output is weighted by a separable window that ramps linearly from
`0.5 / overlap` up to 1 over `overlap` pixels at each tile side that faces
another tile (sides on the image border keep weight 1), and the weighted
outputs are divided by the summed weights: the blend weights of every pixel
sum to one and seams fade over the overlap. The windows and their sum are
separable (the tiles lie on a grid), so each tile's window is divided by the
sum before it is added: the host keeps one float32 accumulator of the image's
size, which is the result. Device memory is bounded by one tile batch.

Tiled output is not identical to whole-image output: the generator's receptive
field crosses tile borders and its instance norms use per-tile statistics.
docs/inference.md gives the measured difference.

Memory budget (`max_memory=`, GiB; `Options.max_memory`, the CLIs'
`--max_memory`): what one image's inference may hold, the generator's pass
and the host's arrays together. `make_deblur_fn` gives its function an
estimate of one pass's peak memory per input pixel (`pass_bytes_per_pixel`:
an explicit formula in the generator's widths, levels and ensemble, measured
once with XLA's memory analysis); `host_bytes` counts the image-sized arrays
`deblur_image` keeps on the host (`host_bytes_per_pixel`: 6C + 12 bytes a
pixel, 30 for RGB: 1.34 GiB at 48 megapixels). `plan_tile` compares the
whole image's pass plus its host arrays with the budget and, when it is over,
picks the largest tile side (a multiple of the generator's stride
2**num_levels) whose pass fits in what the host arrays leave. An explicit
`tile` always wins; `max_memory=None` (the library's default) never tiles by
itself. The process's own baseline (the Python interpreter, jax and XLA, the
compiled generator and its parameters: about 0.5-1 GiB) is outside the
budget. `progress=` reports tiles done.

Test-time local statistics (`local_stats=W`, TLC as in NAFNet): instance norm
and channel attention average over a W x W box around each pixel instead of
the whole image (halved at each downsampling), so a generator trained on
W x W crops sees crop-sized statistics at any image size, whole or tiled.

The input's low frequencies (`low_freq_sigma=S`; the shipped default model
records `LOW_FREQ_SIGMA`, the sigma it was trained through): a blur kernel
sums to one, so it leaves an image's mean and its coarsest structure (scales
well above the kernel's support) as they were; the blurry input carries them,
averaged over its noise. A generator can still move them: the shipped models
darken the red of the held-out rocket's sky by 2-4 grey levels on average,
enough to turn its mildly blurred versions' gains into losses.
`keep_input_low_frequencies` keeps the output's detail above a Gaussian of
standard deviation S and takes what lies below it from the input. It is
applied to the whole (stitched) image, after tiling and self-ensemble, outside
the generator: it adds nothing to train and works for every restored model.
docs/inference.md gives the measured effect.

Self-ensemble (`ensemble=`, `Options.self_ensemble`): "mean" averages the
generator's outputs over the 8 flips and transposes of the input
(`self_ensemble`); "shrink" (which the shipped default model records) also
measures where the 8 disagree and moves the result back toward the input there
(`self_ensemble_shrunk`): the mean correction `rbar = mean_t(y_t) - x` is
scaled, per pixel and channel, by `S / (S + V)`, S and V the 5x5 box means of
`rbar**2` and of the 8 outputs' variance. That is a Wiener gain with the
members' spread as the noise of the correction: where the generator's answer
depends on which way up the photograph is (texture it invents on a nearly
sharp image), it is not trusted; where every orientation agrees (edges it
restores), it is kept whole. No parameter is fitted: the gain has no constant,
and the window (3, 5 or 9 gave the same numbers) only smooths the two
estimates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from flax_gradnet import image_io, losses
from flax_gradnet.metrics import quantize

__all__ = [
    "Options", "PAPER_PROTOCOL", "resolve_options", "deblur_fn_for",
    "restore", "Restored", "make_deblur_fn", "model_stride", "self_ensemble",
    "ensemble_members",
    "self_ensemble_shrunk", "wiener_shrink", "box_mean", "ensemble_kind", "ENSEMBLES",
    "SHRINK_WINDOW", "WEIGHTS", "TILE_OVERLAP", "LOCAL_STATS_CROP",
    "with_local_stats", "training_crop_size", "trained_low_freq_sigma", "low_freq_warning",
    "deblur_image", "deblur_array", "tile_starts", "plan_tile",
    "pass_bytes_per_pixel", "pass_bytes", "host_bytes", "host_bytes_per_pixel", "GIB",
    "tile_window", "weight_sum", "to_float", "to_uint8", "keep_input_low_frequencies",
    "LOW_FREQ_SIGMA", "gate_half_scale", "half_scale_ratio",
]

DeblurFn = Callable[[jax.Array], jax.Array]

# `Options.self_ensemble` (`make_deblur_fn(ensemble=)`): "off" (one pass),
# "mean" (x8 self-ensemble), "shrink" (x8, shrunk toward the input where the 8
# disagree). cli.py spells the same tuple for the CLIs' --help (tested equal).
ENSEMBLES = ("off", "mean", "shrink")
# `Options.weights`: which generator weights of a workdir's checkpoint (`checkpoints.WEIGHTS`).
WEIGHTS = ("ema", "raw")
# `Options.tile_overlap`'s default, in pixels.
TILE_OVERLAP = 32
# `Options.local_stats` for "the training crop size" (the CLIs' bare
# `--local_stats`), replaced by the model's `crop_size` in `resolve_options`.
LOCAL_STATS_CROP = -1
# The sigma in pixels of the low-frequency step configs/gradnet_s_lf.py trains
# through (`config.loss_low_freq_sigma`), which the shipped default model
# gradnet_s_lf records for its inference (`Options.low_freq_sigma`). Chosen from
# the blurs to undo, not from a score: the largest PSFs of the training data
# (~33 px) and of GOPRO (~50-60 px) barely attenuate what a Gaussian of sigma 32
# passes (its half-power period is ~170 px). docs/inference.md has the numbers.
LOW_FREQ_SIGMA = 32.0
# Side of the box over which `self_ensemble_shrunk` averages its two estimates.
SHRINK_WINDOW = 5
# Bytes in a GiB: the unit of `max_memory` (and of the CLIs' `--max_memory`).
GIB = 2 ** 30


def _is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
      v, (bool, np.bool_))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
  """How a generator deblurs: the inference settings a model records with itself.

  The defaults are the paper's protocol (`PAPER_PROTOCOL`): one pass of the
  generator over the whole image, its output as it is. Frozen; `overridden`
  returns a changed copy. Where a setting comes from (flag > the model's
  recorded setting > the paper's protocol): `resolve_options`.

  Attributes:
    self_ensemble: "off" (one pass), "mean" (the x8 flips-and-transposes
      self-ensemble, `self_ensemble`) or "shrink" (`self_ensemble_shrunk`).
    low_freq_sigma: > 0: keep the input's frequencies below a Gaussian of this
      standard deviation in pixels (`keep_input_low_frequencies`); 0 = the
      generator's output as it is.
    local_stats: test-time local statistics over W x W boxes (`with_local_stats`);
      0 = the whole image's, as trained; -1 (`LOCAL_STATS_CROP`) = the
      model's training crop size, which `resolve_options` puts in.
    tile: tile side in pixels (a multiple of the generator's stride, checked
      when the generator is known: `deblur_fn_for`); None = the whole image, or
      the tiles `max_memory` needs.
    tile_overlap: pixels shared by neighbouring tiles (< tile).
    max_memory: a budget in GiB for one image's inference, the generator's
      pass and the host's image-sized arrays (`plan_tile`); None = no budget
      (the CLIs then take `cli.MAX_MEMORY_DEFAULT_GIB`: a budget is a property
      of the machine more than of the model).
    weights: "ema" or "raw": which weights of a workdir's checkpoint
      (`checkpoints.restore_weights`); None = the EMA when it has one.
    scale_gate: > 0: also run the generator (the same ensemble, tiles and
      budget) on the image's 2x2 block means, and where that pass corrects at
      least `scale_gate` times as much as the full-resolution one in the band
      both see, take that band from it (`gate_half_scale`; one decision per
      image); 0 = off. Not in the paper.

  Raises (on construction):
    ValueError: a value out of its range; the message names the field.
  """

  self_ensemble: str = "off"
  low_freq_sigma: float = 0.0
  local_stats: int = 0
  tile: int | None = None
  tile_overlap: int = TILE_OVERLAP
  max_memory: float | None = None
  weights: str | None = None
  scale_gate: float = 0.0

  def __post_init__(self):
    def fail(field: str, want: str) -> ValueError:
      return ValueError(f"inference option {field} must be {want}, got "
                        f"{getattr(self, field)!r}")

    e = self.self_ensemble
    if e is True or e is False:  # the switch `self_ensemble` was before it took a value
      object.__setattr__(self, "self_ensemble", "mean" if e else "off")
    elif e not in ENSEMBLES:
      raise fail("self_ensemble", f"one of {', '.join(ENSEMBLES)}")
    if not (_is_number(self.low_freq_sigma) and 0 <= self.low_freq_sigma < float("inf")):
      raise fail("low_freq_sigma", ">= 0 pixels (0 = off)")
    object.__setattr__(self, "low_freq_sigma", float(self.low_freq_sigma))
    if not (_is_int(self.local_stats) and self.local_stats >= LOCAL_STATS_CROP):
      raise fail("local_stats", "a window in pixels >= 0 (0 = off; -1 = the training crop size)")
    object.__setattr__(self, "local_stats", int(self.local_stats))
    if self.tile is not None:
      if not (_is_int(self.tile) and self.tile > 0):
        raise fail("tile", "a positive number of pixels (or None: the whole image)")
      object.__setattr__(self, "tile", int(self.tile))
    if not (_is_int(self.tile_overlap) and self.tile_overlap >= 0):
      raise fail("tile_overlap", "a number of pixels >= 0")
    object.__setattr__(self, "tile_overlap", int(self.tile_overlap))
    if self.tile is not None and self.tile_overlap >= self.tile:
      raise fail("tile_overlap", f"smaller than tile={self.tile}")
    if self.max_memory is not None:
      if not (_is_number(self.max_memory) and 0 < self.max_memory < float("inf")):
        raise fail("max_memory", "a positive number of GiB (or None: no budget)")
      object.__setattr__(self, "max_memory", float(self.max_memory))
    if self.weights is not None and self.weights not in WEIGHTS:
      raise fail("weights", f"one of {', '.join(WEIGHTS)} (or None: the EMA when there is one)")
    if not (_is_number(self.scale_gate) and 0 <= self.scale_gate < float("inf")):
      raise fail("scale_gate", ">= 0 (0 = off)")
    object.__setattr__(self, "scale_gate", float(self.scale_gate))

  @classmethod
  def fields(cls) -> tuple[str, ...]:
    """The option names, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any) -> "Options":
    """Options from a dict (or ConfigDict) holding any subset of the fields;
    the others keep their defaults (the paper's protocol), as do fields set to
    None.

    Raises:
      ValueError: keys that are not fields (named), or a value out of range.
    """
    if hasattr(d, "to_dict"):  # an ml_collections.ConfigDict
      d = d.to_dict()
    if not isinstance(d, Mapping):
      raise ValueError(f"inference options must be a dict of {', '.join(cls.fields())}, "
                       f"got {type(d).__name__}")
    unknown = sorted(set(d) - set(cls.fields()))
    if unknown:
      raise ValueError(f"unknown inference option(s) {', '.join(map(str, unknown))}; the "
                       f"options are {', '.join(cls.fields())}")
    return cls(**{k: v for k, v in d.items() if v is not None})

  @classmethod
  def from_config(cls, config: Any) -> "Options":
    """The options a training config (or a workdir's / shipped model's
    config.json) records: its `inference` field, any subset of the fields.
    Without one, `PAPER_PROTOCOL`. `local_stats=-1` becomes the config's
    `crop_size` when it has one (else it stays -1: `resolve_options` says why).

    Raises:
      ValueError: an `inference` field that is not a dict of known options
        with valid values (the message starts with "config.inference").
    """
    recorded = config.get("inference") if hasattr(config, "get") else getattr(
        config, "inference", None)
    if recorded is None:
      return PAPER_PROTOCOL
    try:
      options = cls.from_dict(recorded)
    except ValueError as e:
      raise ValueError(f"config.inference: {e}") from None
    crop = config.get("crop_size") if hasattr(config, "get") else None
    if options.local_stats == LOCAL_STATS_CROP and crop:
      options = dataclasses.replace(options, local_stats=int(crop))
    return options

  def to_dict(self) -> dict[str, Any]:
    """{field: value} of every field (JSON-ready: str, float, int or None)."""
    return dataclasses.asdict(self)

  def overridden(self, **overrides: Any) -> "Options":
    """A copy with each keyword that is not None as its new value (None: keep
    this one's: an option not given on the command line).

    Raises:
      ValueError: a keyword that is not a field, or a value out of range.
    """
    unknown = sorted(set(overrides) - set(self.fields()))
    if unknown:
      raise ValueError(f"unknown inference option(s) {', '.join(unknown)}; the options are "
                       f"{', '.join(self.fields())}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(self, **given) if given else self

  @property
  def is_paper_protocol(self) -> bool:
    """Whether the numbers are the generator's own: one pass over the whole
    image, its output as it is (tile, budget and weights aside)."""
    return (self.self_ensemble == "off" and self.low_freq_sigma == 0
            and self.local_stats == 0 and self.tile is None and self.scale_gate == 0)

  def describe(self) -> str:
    """The options that change the output, in words, for protocol lines:
    "one generator pass over the whole image, its output as it is (the paper's
    protocol)" or e.g. "x8 geometric self-ensemble ...; the input's low
    frequencies kept (below a Gaussian of sigma 32 px)". The budget and the
    weights are not said (the weights are in `Restored`'s text)."""
    if self.is_paper_protocol:
      return "one generator pass over the whole image, its output as it is (the paper's protocol)"
    parts = [{
        "off": "one generator pass",
        "mean": "x8 geometric self-ensemble (flips and transposes, outputs averaged)",
        "shrink": ("x8 geometric self-ensemble shrunk toward the input where the 8 disagree "
                   f"(Wiener gain over {SHRINK_WINDOW}x{SHRINK_WINDOW} boxes)"),
    }[self.self_ensemble]]
    if self.tile is not None:
      parts.append(f"tiles of {self.tile}x{self.tile} px, overlap {self.tile_overlap}")
    if self.local_stats == LOCAL_STATS_CROP:
      parts.append("test-time local statistics over the training crop size")
    elif self.local_stats:
      parts.append(f"test-time local statistics over {self.local_stats}x{self.local_stats} "
                   "boxes")
    if self.scale_gate:
      parts.append(f"the coarse band from a half-resolution pass where it corrects >= "
                   f"{self.scale_gate:g}x the full pass's (one choice per image)")
    if self.low_freq_sigma:
      parts.append(f"the input's low frequencies kept (below a Gaussian of sigma "
                   f"{self.low_freq_sigma:g} px)")
    else:
      parts.append("the generator's output as it is")
    return "; ".join(parts)


# The paper's protocol: one generator pass over the whole image, its output as
# it is. The options of a model that records none.
PAPER_PROTOCOL = Options()


class Restored(str):
  """What `restore` restored, as a description string with attributes.

  Attributes:
    workdir: the training workdir, or None for a shipped model.
    model: the shipped model's name, or None for a workdir.
    step: the checkpoint step (for a shipped model: the step it was packed
      from, as its metadata.json says; None if it does not say).
    weights: "ema" or "raw": which generator weights of the checkpoint (for a
      shipped model: what its metadata.json says; None if it does not say).
    options: the model's recorded inference options (`Options.from_config` of
      its config.json; `PAPER_PROTOCOL` when it records none), with
      `local_stats=-1` replaced by its training crop size and `weights` the
      weights restored.
    options_recorded: whether its config.json has an `inference` field (else
      `options` are the paper's protocol).
  """

  workdir: str | None
  model: str | None
  step: int | None
  weights: str | None
  options: Options
  options_recorded: bool

  def __new__(cls, text: str, *, workdir: str | None = None, model: str | None = None,
              step: int | None = None, weights: str | None = None,
              options: Options = PAPER_PROTOCOL):
    self = super().__new__(cls, text)
    self.workdir, self.model, self.step, self.weights = workdir, model, step, weights
    self.options, self.options_recorded = options, False
    return self


def restore(workdir: str | None = None, *, model: str | None = None,
            step: int | str | None = None, dtype: Any = None,
            weights: str | None = None) -> tuple[Any, Any, Restored]:
  """Restores `(module, params, description)` from a training workdir or a shipped model.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main`.
    model: the name of a model shipped with the package (`pretrained.available()`).
      With neither `workdir` nor `model`, `pretrained.DEFAULT_MODEL`.
    step: the workdir's checkpoint step (None = latest; "best" = the highest
      held-out PSNR training recorded); only with `workdir`.
    dtype: compute dtype of the module (default: the config's `compute_dtype`).
    weights: "ema" or "raw" weights of the workdir's checkpoint (None = what
      its config records as `inference.weights`, else the EMA when it has one;
      see `checkpoints.restore_weights`); only with `workdir`.

  Returns:
    The generator module, its parameters, and a `Restored` description, e.g.
    "workdir W at step S", "workdir W at step S (EMA weights)" or "shipped
    model gradnet_s_synth", whose `options` are the model's recorded
    inference options (`Options.from_config`; the paper's protocol when it
    records none).

  Raises:
    ValueError: both `workdir` and `model`, or `step` or `weights` without
      `workdir`; a damaged checkpoint/model; EMA weights asked of a checkpoint
      without them; recorded inference options that are not valid.
    FileNotFoundError: no such workdir, checkpoint or model (the message says which).
  """
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  if workdir is not None and model is not None:
    raise ValueError(f"restore from a workdir ({workdir!r}) or a shipped model ({model!r}), "
                     "not both")
  if workdir is not None:
    return _restore_workdir(workdir, step, dtype, weights)
  name = pretrained.DEFAULT_MODEL if model is None else model
  if step is not None or weights is not None:
    what = f"step={step!r}" if step is not None else f"weights={weights!r}"
    raise ValueError(f"{what} selects from a checkpoint of a workdir; shipped model {name!r} "
                     "has one set of weights")
  module, params = pretrained.load(name, dtype=dtype)
  try:
    meta = pretrained.read_metadata(name)
  except (OSError, ValueError, AttributeError):
    meta = {}
  packed_step = meta.get("step") if isinstance(meta, dict) else None
  packed_weights = meta.get("weights") if isinstance(meta, dict) else None
  packed_weights = packed_weights if packed_weights in WEIGHTS else None
  restored = Restored(f"shipped model {name}", model=name,
                      step=int(packed_step) if isinstance(packed_step, int) else None,
                      weights=packed_weights)
  restored.options = _recorded_options(restored, weights=packed_weights)
  return module, params, restored


def _restore_workdir(workdir: str, step: int | str | None, dtype: Any,
                     weights: str | None) -> tuple[Any, Any, Restored]:
  """`restore` from a training workdir (`checkpoints.restore_weights`)."""
  # pylint: disable=g-import-not-at-top
  from flax_gradnet import checkpoints
  from flax_gradnet import workdir as workdir_lib
  # pylint: enable=g-import-not-at-top
  recorded = Options.from_config(workdir_lib.load_config(workdir))
  r = checkpoints.restore_weights(workdir, step, dtype,
                                  weights=weights if weights is not None else recorded.weights)
  text = f"workdir {workdir} at step {r.step}"
  notes = []
  if step == checkpoints.BEST_STEP:
    notes.append(f"best held-out PSNR {r.metrics['psnr']:.2f} dB")
  if r.has_ema:
    notes.append("EMA weights" if r.weights == "ema" else "raw weights, not the EMA")
  if notes:
    text += f" ({', '.join(notes)})"
  restored = Restored(text, workdir=workdir, step=r.step, weights=r.weights)
  restored.options = _recorded_options(restored, weights=r.weights)
  return r.model, r.params, restored


def _recorded_options(restored: Restored, weights: str | None) -> Options:
  """The restored model's recorded options (its config.json's `inference`),
  `local_stats=-1` resolved, `weights` those restored."""
  _, config = _restored_config(restored)
  options = Options.from_config(config)
  restored.options_recorded = config.get("inference") is not None
  return dataclasses.replace(_resolve_local_stats(options, restored), weights=weights)


def _resolve_local_stats(options: Options, restored: Restored) -> Options:
  if options.local_stats != LOCAL_STATS_CROP:
    return options
  return dataclasses.replace(options, local_stats=training_crop_size(restored))


def resolve_options(restored: Restored, base: Options | None = None,
                    **overrides: Any) -> Options:
  """The options to deblur with: the restored model's recorded options
  (`restored.options`, or `base` instead) with every override that is not
  None (a CLI flag not given is None: the model's setting stays), and
  `local_stats=-1` (a bare `--local_stats`) replaced by the model's training
  crop size.

  Precedence: an override > the model's recorded setting > the paper's
  protocol (`PAPER_PROTOCOL`, the options of a model that records none).

  Raises:
    ValueError: an unknown option, a value out of range (the message names
      the field), or local_stats=-1 for a model whose config has no crop_size.
  """
  if base is None:
    base = getattr(restored, "options", PAPER_PROTOCOL)
  return _resolve_local_stats(base.overridden(**overrides), restored)


def _flips(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [4N, H, W, C]: x, x flipped left-right, up-down, and both."""
  return jnp.concatenate([x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]])


def _unflipped(y: jax.Array) -> tuple[jax.Array, ...]:
  """Inverse of `_flips` on the outputs: the 4 outputs, each back upright."""
  a, b, c, d = jnp.split(y, 4)
  return a, b[:, :, ::-1], c[:, ::-1], d[:, ::-1, ::-1]


def ensemble_members(apply: Callable[[jax.Array], jax.Array], x: jax.Array):
  """The 8 outputs `T^-1(apply(T(x)))` of the self-ensemble, each [N, H, W, C].

  The 4 transforms that keep the orientation (identity and the 3 flips) run as
  one batch, the 4 that swap height and width (the transpose and its flips) as
  another: two calls of 4N images each, also for non-square images.
  """
  yield from _unflipped(apply(_flips(x)))
  for y in _unflipped(apply(_flips(jnp.swapaxes(x, 1, 2)))):
    yield jnp.swapaxes(y, 1, 2)


def self_ensemble(apply: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
  """Geometric self-ensemble (x8): the mean of `T^-1(apply(T(x)))` over the 8
  flips and rotations T of the square's symmetry group (`ensemble_members`:
  two calls of 4N images)."""
  return sum(ensemble_members(apply, x)) / 8.0


def box_mean(x: jax.Array, window: int) -> jax.Array:
  """The mean of [N, H, W, C] `x` over `window` x `window` boxes (odd `window`),
  borders mirrored as scipy.ndimage.uniform_filter's mode="reflect"."""
  if window < 1 or window % 2 == 0:
    raise ValueError(f"the box window must be a positive odd number of pixels, got {window}")
  if window == 1:
    return x
  p = window // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="symmetric")
  total = jax.lax.reduce_window(xp, jnp.zeros((), x.dtype), jax.lax.add, (1, window, window, 1),
                                (1, 1, 1, 1), "VALID")
  return total / (window * window)


def self_ensemble_shrunk(apply: Callable[[jax.Array], jax.Array], x: jax.Array, *,
                         window: int = SHRINK_WINDOW) -> jax.Array:
  """The x8 self-ensemble, shrunk toward the input `x` where its members disagree.

  With `y_t` the 8 members (`ensemble_members`), `r_t = y_t - x`, `rbar` their
  mean and `v` their variance (over t, per pixel and channel), returns
  `x + S / (S + V) * rbar`, where S and V are `box_mean(rbar**2)` and
  `box_mean(v)` over `window` x `window` boxes (0 where both are 0). The gain is
  Wiener's `signal / (signal + noise)` with the members' spread standing for
  the noise of the correction. It lies in [0, 1], so the result lies between
  the input and the plain mean: where all 8 agree it is `self_ensemble`'s
  output, where they cancel it is the input. Same cost as `self_ensemble`
  (two calls of 4N images); residuals, not outputs, are accumulated, so the
  variance does not lose precision to outputs near +-1.
  """
  x = jnp.asarray(x, jnp.float32)
  total = jnp.zeros_like(x)
  total_sq = jnp.zeros_like(x)
  for y in ensemble_members(apply, x):
    r = jnp.asarray(y, jnp.float32) - x
    total, total_sq = total + r, total_sq + r * r
  rbar = total / 8.0
  var = jnp.maximum(total_sq / 8.0 - rbar * rbar, 0.0)
  return wiener_shrink(x, rbar, var, window)


def wiener_shrink(x: jax.Array, rbar: jax.Array, var: jax.Array,
                  window: int = SHRINK_WINDOW) -> jax.Array:
  """`x + S / (S + V) * rbar` with S, V = `box_mean(rbar**2)`, `box_mean(var)`
  (the gain 0 where both are 0): a correction `rbar` of `x`, shrunk where its
  estimated variance `var` is large against its own square. [N, H, W, C]."""
  signal = box_mean(rbar * rbar, window)
  noise = box_mean(var, window)
  denom = signal + noise
  gain = jnp.where(denom > 0, signal / jnp.where(denom > 0, denom, 1.0), 0.0)
  return x + gain * rbar


def with_local_stats(model: Any, window: int) -> Any:
  """`model` with test-time local statistics over a `window` box (0 = global,
  the model as trained). The parameters are unchanged.

  Raises:
    ValueError: a negative window, or a module without the `stats_window`
      field (flax_gradnet.models.Generator has it).
  """
  if window < 0:
    raise ValueError(f"local statistics window must be >= 0 (0 = off), got {window}")
  if window == 0:
    return model
  if not hasattr(model, "stats_window"):
    raise ValueError(f"{type(model).__name__} has no stats_window field: test-time local "
                     "statistics need a flax_gradnet Generator")
  return model.clone(stats_window=int(window))


def _restored_config(restored: "Restored") -> tuple[str, Any]:
  """(the folder holding the restored generator's config.json, that config)."""
  from flax_gradnet import pretrained  # pylint: disable=g-import-not-at-top
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  folder = (restored.workdir if restored.workdir is not None
            else pretrained.model_dir(restored.model))
  return folder, workdir_lib.load_config(folder)


def training_crop_size(restored: "Restored") -> int:
  """The crop side the restored generator was trained on (its config's
  `crop_size`): the natural `local_stats` window."""
  from flax_gradnet import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  folder, config = _restored_config(restored)
  if "crop_size" not in config:
    raise ValueError(f"{folder}/{workdir_lib.CONFIG_FILE} has no crop_size: give the local "
                     "statistics window explicitly")
  return int(config.crop_size)


def trained_low_freq_sigma(restored: "Restored") -> float:
  """The restored generator's `config.loss_low_freq_sigma` (0 when its config
  has none): a generator trained through the low-frequency step
  (`losses.keep_low_frequencies`) was never asked for the content below that
  Gaussian, so its output needs `low_freq_sigma` >= this value."""
  try:
    _, config = _restored_config(restored)
  except (OSError, ValueError):
    return 0.0
  return float(config.get("loss_low_freq_sigma", 0.0) or 0.0)


def low_freq_warning(restored: "Restored", low_freq_sigma: float) -> str | None:
  """A one-line warning when `low_freq_sigma` is below what the restored
  generator was trained through (`trained_low_freq_sigma`), else None."""
  trained = trained_low_freq_sigma(restored)
  if low_freq_sigma >= trained:
    return None
  return (f"warning: {restored} was trained through the low-frequency step "
          f"(config.loss_low_freq_sigma={trained:g}): its own content below a Gaussian of "
          f"sigma {trained:g} px was never trained, so with --low_freq_sigma={low_freq_sigma:g} "
          f"its output can shift colours and shading (use --low_freq_sigma={trained:g} or more)")


def ensemble_kind(ensemble: bool | str | None) -> str:
  """"off", "mean" or "shrink" for an `ensemble=` argument (False/None = "off",
  True = "mean", as before the choice had three values)."""
  if ensemble is None or ensemble is False:
    return "off"
  if ensemble is True:
    return "mean"
  if ensemble not in ENSEMBLES:
    raise ValueError(f"ensemble must be one of {ENSEMBLES} (or True/False), got {ensemble!r}")
  return ensemble


# `pass_bytes_per_pixel`'s formula: float32 values held per input pixel by one
# generator pass, per base feature (without / with test-time local
# statistics), per bottleneck feature at 1/4**num_levels of the pixels, and a
# constant (the input, output and ensemble accumulators).
PASS_FLOATS_PER_BASE_FEATURE = 3
PASS_FLOATS_PER_BASE_FEATURE_LOCAL_STATS = 9
PASS_FLOATS_CONSTANT = 48
# The self-ensemble's members (`ensemble_members`), each counted as one pass.
ENSEMBLE_MEMBERS = 8


def pass_bytes_per_pixel(model: Any, ensemble: bool | str = False) -> float | None:
  """Estimated peak memory of one deblurring pass, in bytes per input pixel.

  `4 * m * (a * base_features + gradientnet_features / 4**num_levels + 48)`:
  `a` = 3 (`PASS_FLOATS_PER_BASE_FEATURE`), or 9 when the model has test-time
  local statistics (`stats_window > 0`, whose box sums hold more full-resolution
  maps); `num_levels` defaults to 2 for modules (and configs) without it; `m` =
  1 for `ensemble="off"`, 8 (`ENSEMBLE_MEMBERS`) for "mean" and "shrink"; 4
  bytes a float32 value (bfloat16 compute is counted as float32: the ensemble
  accumulates in float32, and the bound stays an upper one). The pass also
  holds the parameters (`pass_bytes`).

  How it was measured (jax 0.10.2, XLA:CPU, not on an accelerator): for each
  generator below, `jax.jit(apply).lower(params, x).compile().memory_analysis()`
  of `make_deblur_fn`'s compiled function (temp + argument + output bytes) at
  128x128 and 256x256 inputs; the slope between the two, per pixel, is the
  measured number (the intercept is about the parameters' bytes). The formula
  was fitted over these as an upper bound: at the shipped and paper widths
  (16-64 base features) 6-39% above one pass and 13-72% above the ensemble,
  (a model with `scales` > 1 is counted 4/3 of a pass, the limit of
  1 + 1/4 + 1/16 + ..., not measured),
  more (up to 4x) for the tests' tiny generators, whose constant dominates
  (float32 values per pixel, measured / formula):

      base, gradientnet, levels, other fields      off        shrink (mean <=)
      4, 4, 2 (tests' tiny, instance norm)         22 / 60    118 / 482
      8, 16, 2 (norm none, pixel shuffle)          38 / 73    254 / 584
      16, 32, 2 (the shipped models)               86 / 98    542 / 784
      16, 32, 3 (num_levels 3)                     86 / 97    542 / 772
      16, 32, 1                                    86 / 104   638 / 832
      16, 128, 2                                   92 / 104   734 / 832
      32, 32, 2                                   105 / 146   693 / 1168
      64, 64, 2 (the paper's, 10 MBRBs)           204 / 244  1472 / 1952
      16, 32, 2, stats_window 32                  183 / 194  1167 / 1552
      64, 64, 2, 10 MBRBs, stats_window 64        518 / 628  2924 / 5024

  The shipped models' crash on a 6000x4000 photograph (x8 shrunk ensemble) was
  XLA:CPU failing to allocate 51,456,000,000 bytes: 2144 bytes a pixel of
  temporaries, the measured 2168 (542 floats) less the input and output.

  Args:
    model: a flax_gradnet Generator (fields `base_features`,
      `gradientnet_features`, optionally `num_levels`, `stats_window`).
    ensemble: as `make_deblur_fn`'s.

  Returns:
    Bytes per input pixel, or None for a module without those fields (no
    estimate: such a function is never tiled by a budget).
  """
  kind = ensemble_kind(ensemble)
  if not (hasattr(model, "base_features") and hasattr(model, "gradientnet_features")):
    return None
  levels = int(getattr(model, "num_levels", 2))
  local = int(getattr(model, "stats_window", 0) or 0) > 0
  per_feature = (PASS_FLOATS_PER_BASE_FEATURE_LOCAL_STATS if local
                 else PASS_FLOATS_PER_BASE_FEATURE)
  floats = (per_feature * int(model.base_features)
            + int(model.gradientnet_features) / 4 ** levels + PASS_FLOATS_CONSTANT)
  # Coarse-to-fine passes (`scales`) run one after the other; each finer one holds
  # the coarser pass's output too, a few floats a pixel (the constant covers them).
  floats *= 1.0 if int(getattr(model, "scales", 1)) == 1 else 1.0 + 1.0 / 3.0
  # A coarse pass (`coarse_down` = c) holds its own activations at 1/c**2 of the pixels.
  coarse = int(getattr(model, "coarse_down", 0) or 0)
  floats *= 1.0 if coarse < 2 else 1.0 + 1.0 / coarse**2
  members = 1 if kind == "off" else ENSEMBLE_MEMBERS
  return 4.0 * members * floats


def make_deblur_fn(model: Any, params: Any, *, ensemble: bool | str = False,
                   local_stats: int = 0) -> DeblurFn:
  """A jit-compiled `fn(images [N, H, W, C] in [-1, 1]) -> float32 [N, H, W, C] in [-1, 1]`.

  C is the model's `channels` (3 for modules without the field); `fn.channels`
  says it, and `deblur_image` converts RGB or grey files to it.

  Parameters are an argument of the compiled function (not constants baked into
  it), so compiling for a new shape stays cheap; each new shape retraces once.
  `ensemble`: "off" (or False) one generator pass; "mean" (or True) the
  geometric self-ensemble (`self_ensemble`, 8 passes; with tiling, per tile);
  "shrink" the same 8 passes shrunk toward the input where they disagree
  (`self_ensemble_shrunk`). `fn.ensemble` says which.
  `local_stats=W > 0`: test-time local statistics over W x W boxes
  (`with_local_stats`).

  For `plan_tile` the function also carries `fn.stride` (the generator's total
  stride, 2**num_levels; tiles are multiples of it), `fn.bytes_per_pixel`
  (`pass_bytes_per_pixel`; None for a module without its fields) and
  `fn.param_bytes` (the parameters' size).
  """
  kind = ensemble_kind(ensemble)
  params = jax.device_put(params)
  model = with_local_stats(model, local_stats)
  combine = {"mean": self_ensemble, "shrink": self_ensemble_shrunk}.get(kind)

  @jax.jit
  def apply(p, x):
    one = lambda z: jnp.asarray(model.apply({"params": p}, z), jnp.float32)
    return one(x) if combine is None else combine(one, x)

  def fn(x):
    return apply(params, x)

  fn.channels = int(getattr(model, "channels", 3))
  fn.ensemble = kind
  fn.stride = model_stride(model)
  fn.bytes_per_pixel = pass_bytes_per_pixel(model, kind)
  fn.param_bytes = int(sum(np.dtype(leaf.dtype).itemsize * int(np.size(leaf))
                           for leaf in jax.tree_util.tree_leaves(params)))
  return fn


def model_stride(model: Any) -> int:
  """The generator's total stride, 2**num_levels (2 levels for a module
  without the field) times 2**(scales - 1) for coarse-to-fine passes, or times
  `coarse_down` for a coarse pass when that is larger: tiles are multiples of it."""
  levels = 2 ** int(getattr(model, "num_levels", 2))
  return levels * max(2 ** (int(getattr(model, "scales", 1)) - 1),
                      int(getattr(model, "coarse_down", 0) or 0))


def deblur_fn_for(model: Any, params: Any, options: Options = PAPER_PROTOCOL) -> DeblurFn:
  """`make_deblur_fn` of `options` (its `self_ensemble` and `local_stats`),
  carrying them as `fn.options`: `deblur_image(fn, image)` / `deblur_array`
  then apply the rest (tiles, budget, the input's low frequencies).

  Raises:
    ValueError: `local_stats=-1` not yet resolved (`resolve_options` puts in
      the training crop size), or a tile that is not a multiple of the
      generator's stride (`model_stride`).
  """
  if options.local_stats == LOCAL_STATS_CROP:
    raise ValueError("local_stats=-1 (the training crop size) must be resolved first: "
                     "inference.resolve_options(restored) puts in the model's crop_size")
  stride = model_stride(model)
  if options.tile is not None and options.tile % stride:
    raise ValueError(f"tile must be a multiple of {stride} for this generator (its total "
                     f"stride, 2**num_levels), got {options.tile}")
  fn = make_deblur_fn(model, params, ensemble=options.self_ensemble,
                      local_stats=options.local_stats)
  fn.options = options
  return fn


def _check_low_freq_sigma(sigma: float) -> None:
  if not sigma >= 0:  # also NaN
    raise ValueError(f"low_freq_sigma must be >= 0 pixels (0 = off), got {sigma}")


def keep_input_low_frequencies(output: np.ndarray, blurry: np.ndarray, sigma: float) -> np.ndarray:
  """The output's detail over the blurry input's low frequencies:
  `output - G * output + G * blurry`, clipped to [-1, 1].

  G is a Gaussian of standard deviation `sigma` pixels over height and width,
  per channel, exactly scipy.ndimage.gaussian_filter's (sampled, normalised,
  truncated at 4 sigma, mirrored borders: "reflect" = numpy's "symmetric"
  padding, repeated for kernels larger than the image). It is computed in the
  DCT-II domain, which that mirroring makes exact: a symmetric kernel over a
  half-sample-symmetric signal multiplies DCT coefficient k by sum_m g(m)
  cos(pi k m / N). That costs the same for any sigma (~30 ms at 1280x720 on
  one CPU core, against ~370 ms for the direct 257-tap filter). Since G is
  linear, one filtering of `blurry - output` does it. What a sharp and a blurry
  photograph share below G (the mean colour, shading over hundreds of pixels)
  is taken from the input, whose noise G also averages away; everything the
  generator restored above it is kept. A change of the output that is constant
  over the image is undone exactly.

  Computed one channel at a time in float32 (the result's own precision,
  ~1e-6 from scipy's float64 filter): besides the result it holds three
  float32 planes of one channel (12 bytes a pixel; `host_bytes_per_pixel`).

  Args:
    output: the deblurred image, float [H, W, C] in [-1, 1].
    blurry: the input it was deblurred from, float [H, W, C] in [-1, 1]
      (or the uint8 image it was scaled from by `to_float`).
    sigma: pixels; 0 returns `output` unchanged.

  Raises:
    ValueError: a negative sigma, or images of different shapes.
  """
  _check_low_freq_sigma(sigma)
  output = np.asarray(output, np.float32)
  if sigma == 0:
    return output
  blurry = np.asarray(blurry)
  if output.shape != blurry.shape or output.ndim != 3:
    raise ValueError(f"output and blurry input must both be [H, W, C] of one shape, got "
                     f"{output.shape} and {blurry.shape}")
  result = np.array(output, np.float32)  # a copy: the caller's output is left as it is
  _keep_low_frequencies_inplace(result, blurry, float(sigma))
  return result


def _keep_low_frequencies_inplace(out: np.ndarray, blurry: np.ndarray, sigma: float) -> None:
  """`keep_input_low_frequencies` into `out` (float32 [H, W, C], overwritten),
  per channel; `blurry` is float or the uint8 image `to_float` scales."""
  for ch in range(out.shape[-1]):
    d = _channel_float(blurry, ch)
    d -= out[..., ch]
    out[..., ch] += _gaussian_reflect(d, sigma, overwrite=True)
  np.clip(out, -1.0, 1.0, out=out)


def _channel_float(image: np.ndarray, ch: int) -> np.ndarray:
  """A new float32 [H, W] copy of channel `ch`, scaled by `to_float` if uint8."""
  plane = np.array(image[..., ch], np.float32)
  if image.dtype == np.uint8:
    plane /= np.float32(127.5)  # to_float's operations, in place: the same values
    plane -= np.float32(1.0)
  return plane


def _gaussian_reflect(x: np.ndarray, sigma: float, *, overwrite: bool = False) -> np.ndarray:
  """scipy.ndimage.gaussian_filter(x, (sigma, sigma, 0...), mode="reflect",
  truncate=4.0) over the first two axes of `x` ([H, W] or [H, W, C]), through
  the DCT-II (see `keep_input_low_frequencies`), in `x`'s float precision.
  `overwrite`: `x` may be overwritten (saves a copy)."""
  from scipy import fft  # pylint: disable=g-import-not-at-top
  coeffs = fft.dctn(x, type=2, axes=(0, 1), overwrite_x=overwrite)
  tail = (1,) * (x.ndim - 2)
  for axis in (0, 1):
    n = x.shape[axis]
    response = losses.gaussian_dct_response(n, sigma).astype(coeffs.dtype)
    coeffs *= response.reshape(((n, 1) if axis == 0 else (1, n)) + tail)
  return fft.idctn(coeffs, type=2, axes=(0, 1), overwrite_x=True)


def to_float(image_uint8: np.ndarray) -> np.ndarray:
  """uint8 [..., C] -> float32 in [-1, 1] (the training pipeline's scaling)."""
  return np.asarray(image_uint8, np.float32) / 127.5 - 1.0


def to_uint8(x: Any) -> np.ndarray:
  """[-1, 1] floats -> uint8, as `metrics.quantize` (what published numbers measure)."""
  return np.asarray(quantize(x))


def _to_uint8_inplace(x: np.ndarray) -> np.ndarray:
  """`to_uint8` of float32 `x` (overwritten) without a float copy: the same
  float32 operations as `metrics.quantize` (x + 1, * 127.5, round half to
  even, clip to [0, 255]), so the same bytes."""
  x += np.float32(1.0)
  x *= np.float32(127.5)
  np.rint(x, out=x)
  np.clip(x, 0, 255, out=x)
  return x.astype(np.uint8)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of tiles of size `min(tile, length)` covering [0, length).

  Stride `tile - overlap`; the last start is moved back to `length - tile` so
  no tile leaves the image (its overlap with the previous tile then grows).
  """
  if tile <= 0 or overlap < 0 or overlap >= tile:
    raise ValueError(f"need tile > overlap >= 0, got tile={tile}, overlap={overlap}")
  if length <= tile:
    return [0]
  stride = tile - overlap
  starts = list(range(0, length - tile + 1, stride))
  if starts[-1] != length - tile:
    starts.append(length - tile)
  return starts


def _ramp(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
  w = np.ones(size, np.float64)
  if overlap > 0:
    r = (np.arange(overlap) + 0.5) / overlap  # strictly positive: every pixel has weight
    n = min(overlap, size)
    if ramp_start:
      w[:n] = np.minimum(w[:n], r[:n])
    if ramp_end:
      w[size - n:] = np.minimum(w[size - n:], r[:n][::-1])
  return w


def tile_window(tile_h: int, tile_w: int, overlap: int, *, top: bool = True, bottom: bool = True,
                left: bool = True, right: bool = True) -> np.ndarray:
  """The separable blend window of one tile, [tile_h, tile_w] float64.

  Each flagged side ramps linearly over `overlap` pixels from `0.5/overlap` to 1;
  sides on the image border are passed False and keep weight 1.
  """
  return np.outer(_ramp(tile_h, overlap, top, bottom), _ramp(tile_w, overlap, left, right))


def _tiles(h: int, w: int, tile: int, overlap: int):
  """Yields (y, x, window) for every tile of an h x w image."""
  th, tw = min(tile, h), min(tile, w)
  ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
  for y in ys:
    for x in xs:
      window = tile_window(th, tw, overlap, top=y > 0, bottom=y + th < h,
                           left=x > 0, right=x + tw < w)
      yield y, x, window


def weight_sum(h: int, w: int, tile: int, overlap: int) -> np.ndarray:
  """Sum of all tiles' windows at every pixel of an h x w image ([h, w] float64).

  Each tile's normalised blend weight is `window / weight_sum`; they sum to one.
  """
  acc = np.zeros((h, w), np.float64)
  th, tw = min(tile, h), min(tile, w)
  for y, x, window in _tiles(h, w, tile, overlap):
    acc[y:y + th, x:x + tw] += window
  return acc


def _stride(fn: DeblurFn) -> int:
  """The total stride of `fn`'s generator (`make_deblur_fn` sets it; 4, the
  paper generator's, for other functions)."""
  return int(getattr(fn, "stride", 4))


def pass_bytes(fn: DeblurFn, height: int, width: int, batch: int = 1) -> float | None:
  """Estimated peak memory of one call of `fn` on `batch` images of height x
  width, in bytes: `fn.bytes_per_pixel` (`pass_bytes_per_pixel`) times the
  pixels the generator sees (height and width padded up to `fn.stride`), plus
  `fn.param_bytes`. None for a function without an estimate."""
  bytes_per_pixel = getattr(fn, "bytes_per_pixel", None)
  if bytes_per_pixel is None:
    return None
  s = _stride(fn)
  padded = (-(-height // s) * s) * (-(-width // s) * s)
  return batch * bytes_per_pixel * padded + getattr(fn, "param_bytes", 0)


# `host_bytes`: bytes a pixel that `deblur_image` keeps on the host for an
# image of C channels, outside the generator's pass: the uint8 input (C) and
# uint8 result (C), the float32 output that is also the tiles' accumulator (4C),
# and the low-frequency step's three float32 planes of one channel (12).
HOST_BYTES_PER_CHANNEL = 6
HOST_BYTES_LOW_FREQ = 12
# `gate_half_scale`'s own arrays at half resolution (the block means, the half
# pass's output and correction, the band and its temporaries, the upsampling's
# half-height rows), about this many bytes per channel of a full-size pixel: the
# half pass's budget leaves them out.
GATE_BYTES_PER_CHANNEL = 10


def host_bytes_per_pixel(channels: int = 3) -> int:
  """6C + 12: bytes a pixel of `host_bytes` (30 for RGB, 18 for grey)."""
  return HOST_BYTES_PER_CHANNEL * channels + HOST_BYTES_LOW_FREQ


def host_bytes(height: int, width: int, channels: int = 3) -> int:
  """Bytes of the image-sized arrays `deblur_image` holds on the host besides
  the generator's pass (`pass_bytes`), whole or tiled: height * width *
  (6C + 12) (`host_bytes_per_pixel`): the uint8 input and result (C + C), the
  float32 output that tiles are accumulated into (4C; each tile is scaled to
  float from the uint8 input as it goes), and `keep_input_low_frequencies`'
  three float32 planes of one channel (12). For RGB 30 bytes a pixel: 0.67 GiB
  at 24 megapixels, 1.34 GiB at 48. Tiles themselves are the pass's. What a
  caller holds besides (`deblur_array`'s float input: 4C) is its own."""
  return int(height) * int(width) * host_bytes_per_pixel(int(channels))


def _check_max_memory(max_memory: float | None) -> None:
  if max_memory is not None and not 0 < max_memory < float("inf"):  # also NaN
    raise ValueError(f"max_memory must be a positive number of GiB (or None), got {max_memory}")


def plan_tile(fn: DeblurFn, height: int, width: int, *, tile: int | None = None,
              tile_overlap: int = 32, tile_batch_size: int = 1,
              max_memory: float | None = None) -> int | None:
  """The tile side `deblur_array` uses for a height x width image (None: whole).

  An explicit `tile` always wins. Otherwise, with a budget `max_memory` (GiB)
  and a function that carries an estimate (`pass_bytes`), the budget is for
  the whole inference: the generator's pass plus the image's host arrays
  (`host_bytes` with `fn.channels`, 3 without it). The image is deblurred at
  once when `pass_bytes(whole) + host_bytes <= max_memory`; when not, the tile
  is the largest multiple of `fn.stride` whose pass (`tile_batch_size` tiles,
  each at most the image's height and width) fits in `max_memory -
  host_bytes`. Without a budget or an estimate: None.

  Raises:
    ValueError: a budget that is not a positive number, or one that leaves no
      tile larger than `tile_overlap` (the message says what the smallest
      such tile and the host arrays need).
  """
  _check_max_memory(max_memory)
  if tile is not None or max_memory is None:
    return tile
  whole = pass_bytes(fn, height, width)
  if whole is None:
    return None
  host = host_bytes(height, width, getattr(fn, "channels", 3))
  budget = max_memory * GIB - host  # what the host arrays leave to the pass
  if whole <= budget:
    return None
  s = _stride(fn)
  fits = lambda t: pass_bytes(fn, min(t, height), min(t, width), tile_batch_size) <= budget
  lo, hi = 0, -(-max(height, width) // s)  # in strides: fits(lo * s) is assumed, hi is not
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid * s) else (lo, mid)
  best = lo * s
  if best <= tile_overlap:
    smallest = (tile_overlap // s + 1) * s
    need = pass_bytes(fn, min(smallest, height), min(smallest, width), tile_batch_size) / GIB
    raise ValueError(f"max_memory={max_memory:g} GiB is too small for this generator: even a "
                     f"{smallest}x{smallest} tile (the smallest larger than the overlap "
                     f"{tile_overlap}) needs ~{need:.2f} GiB besides the {width}x{height} "
                     f"image's host arrays (~{host / GIB:.2f} GiB)")
  return best


def _effective(fn: DeblurFn, options: Options | None, **loose: Any) -> Options:
  """`options` (default: `fn.options`, as `deblur_fn_for` sets it, else the
  paper's protocol) with the loose keyword arguments that are not None."""
  base = options if options is not None else getattr(fn, "options", PAPER_PROTOCOL)
  return base.overridden(**loose)


def deblur_array(fn: DeblurFn, x: np.ndarray, options: Options | None = None, *,
                 tile: int | None = None, tile_overlap: int | None = None,
                 tile_batch_size: int = 1, low_freq_sigma: float | None = None,
                 max_memory: float | None = None, scale_gate: float | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Deblurs one float image [H, W, C] in [-1, 1]; returns float32 [H, W, C].

  Args:
    fn: from `deblur_fn_for` or `make_deblur_fn` (any batched [N, H, W, C] ->
      [N, H, W, C] function).
    x: the image, with the channels `fn` takes (3 = RGB, 1 = grey, ...).
    options: the `Options` whose `tile`, `tile_overlap`, `low_freq_sigma` and
      `max_memory` apply (its `self_ensemble` and `local_stats` are `fn`'s
      own); default `fn.options` (`deblur_fn_for`), else `PAPER_PROTOCOL`.
      The keyword arguments below that are not None override it.
    tile: tile side (a multiple of `fn.stride`, the generator's total stride
      2**num_levels; 4 for a function without it) or None for the whole image
      at once, or the tiles `max_memory` needs. Tiles larger than the image
      shrink to it.
    tile_overlap: pixels shared by neighbouring tiles (< tile; default 32).
    tile_batch_size: tiles per call of `fn` (the last batch is padded by
      repeating a tile, so every call has the same shape).
    low_freq_sigma: > 0: the result keeps `x`'s frequencies below a Gaussian
      of this standard deviation (`keep_input_low_frequencies`, on the whole
      image after tiling); 0 = the generator's output as it is.
    max_memory: a budget in GiB for the pass of `fn` and the host arrays
      (`plan_tile`, `host_bytes`): without `tile`, an image whose whole-image
      inference would need more is tiled with the largest tile that fits.
      None = no budget.
    scale_gate: > 0: `gate_half_scale` with this threshold (before the
      low-frequency step); 0 = off.
    progress: called as `progress(tiles_done, tiles_total)` after each call of
      `fn` on tiles (not for a whole image).

  Besides `fn`'s own memory and `x` (the caller's), the host holds the float32
  result, into which tiles are accumulated (4C bytes a pixel), and the
  low-frequency step's planes of one channel (12): `host_bytes`.
  """
  # Checked before the generator runs, not after.
  o = _effective(fn, options, tile=tile, tile_overlap=tile_overlap,
                 low_freq_sigma=low_freq_sigma, max_memory=max_memory, scale_gate=scale_gate)
  x = np.asarray(x, np.float32)
  if x.ndim != 3:
    raise ValueError(f"expected an [H, W, C] image ([H, W, 3] RGB, [H, W, 1] grey), got shape "
                     f"{x.shape}")
  return _deblur(fn, x, o, tile_batch_size, progress)


def _as_float(image: np.ndarray) -> np.ndarray:
  """`image` as float32 in [-1, 1]: `to_float` of uint8, float32 as it is."""
  return to_float(image) if image.dtype == np.uint8 else image


def _deblur(fn: DeblurFn, image: np.ndarray, o: Options, tile_batch_size: int,
            progress: Callable[[int, int], None] | None) -> np.ndarray:
  """`deblur_array` of `image`, float32 in [-1, 1] or the uint8 image that
  `to_float` scales (converted a tile at a time: no float copy of the whole
  image); returns a new float32 [H, W, C] (the caller may overwrite it)."""
  h, w, c = image.shape
  tile_overlap, sigma = o.tile_overlap, o.low_freq_sigma
  _check_low_freq_sigma(sigma)
  tile = plan_tile(fn, h, w, tile=o.tile, tile_overlap=tile_overlap,
                   tile_batch_size=tile_batch_size, max_memory=o.max_memory)
  if tile is None or (tile >= h and tile >= w):
    y = fn(_as_float(image)[None])
    out = np.array(np.asarray(y)[0], np.float32)  # a writable copy, for the steps below
    del y
  else:
    out = _deblur_tiled(fn, image, tile, tile_overlap, tile_batch_size, progress)
  if o.scale_gate > 0:
    _scale_gate(fn, out, image, o, tile_batch_size)
  if sigma > 0:
    _keep_low_frequencies_inplace(out, image, sigma)
  return out


def _scale_gate(fn: DeblurFn, out: np.ndarray, image: np.ndarray, o: Options,
                tile_batch_size: int) -> None:
  """`gate_half_scale` on `out` with `fn` as its half pass, under `o`'s tiles and
  budget. The half pass's budget leaves out what the host holds meanwhile: the
  full-size arrays (`host_bytes`) and the gate's own half-resolution ones
  (`GATE_BYTES_PER_CHANNEL`). Where that leaves no room for the half pass, the
  gate is skipped (a warning says so) and the full pass's output stands."""
  h, w, c = image.shape
  budget, problem = o.max_memory, None
  if budget is not None:
    budget -= (host_bytes(h, w, c) + GATE_BYTES_PER_CHANNEL * c * h * w) / GIB
    if budget <= 0:
      problem = "it leaves no room for the half-resolution pass"
    else:
      try:
        plan_tile(fn, h // 2, w // 2, tile=o.tile, tile_overlap=o.tile_overlap,
                  tile_batch_size=tile_batch_size, max_memory=budget)
      except ValueError as e:  # no tile fits
        problem = str(e)
  if problem is not None:
    warnings.warn(f"scale_gate skipped for this {h}x{w} image under max_memory="
                  f"{o.max_memory:g} GiB: {problem}", stacklevel=3)
    return
  half = dataclasses.replace(o, scale_gate=0.0, low_freq_sigma=0.0, max_memory=budget)
  gate_half_scale(out, image, lambda xh: _deblur(fn, xh, half, tile_batch_size, None),
                  o.scale_gate)


def _block_means(image: np.ndarray, rows: int = 256) -> np.ndarray:
  """float32 2x2 block means of `image` [H, W, C] (float in [-1, 1] or the uint8
  image `to_float` scales; H, W even), converted a band of rows at a time."""
  h, w, c = image.shape
  out = np.empty((h // 2, w // 2, c), np.float32)
  for top in range(0, h, 2 * rows):
    band = _as_float(image[top:top + 2 * rows]).astype(np.float32, copy=False)
    out[top // 2:top // 2 + band.shape[0] // 2] = band.reshape(
        band.shape[0] // 2, 2, w // 2, 2, c).mean(axis=(1, 3))
  return out


def _neighbours(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
  """(a[i - 1], a[i + 1]) along `axis` for every i, the edge repeated."""
  n = a.shape[axis]
  p = np.concatenate([np.take(a, [0], axis), a, np.take(a, [-1], axis)], axis)
  return np.take(p, range(0, n), axis), np.take(p, range(2, n + 2), axis)


def _smooth_3(x: np.ndarray) -> np.ndarray:
  """[1/8, 3/4, 1/8] along both image axes, edges repeated: down(up(x)), the 2x2
  block means of `x` once bilinearly upsampled by 2 (half-pixel centres, edges
  clamped, as `upsample_bilinear`), computed at `x`'s own resolution."""
  for axis in (0, 1):
    before, after = _neighbours(x, axis)
    x = 0.75 * x + 0.125 * (before + after)
  return x.astype(np.float32)


def _add_upsampled(out: np.ndarray, d: np.ndarray, rows: int = 256) -> None:
  """out[:2h, :2w] += `d` [h, w, C] bilinearly upsampled by 2 (half-pixel
  centres, edges clamped: `upsample_bilinear`), a band of rows at a time."""
  h, w, _ = d.shape
  def up(a, axis):  # along one axis: 2i <- 3/4 a[i] + 1/4 a[i-1], 2i+1 <- 3/4 a[i] + 1/4 a[i+1]
    before, after = _neighbours(a, axis)
    even, odd = 0.75 * a + 0.25 * before, 0.75 * a + 0.25 * after
    return np.stack([even, odd], axis + 1).reshape(
        a.shape[:axis] + (2 * a.shape[axis],) + a.shape[axis + 1:])
  wide = up(d, 1)  # [h, 2w, C]
  for top in range(0, h, rows):
    lo, hi = max(top - 1, 0), min(top + rows + 1, h)
    band = up(wide[lo:hi], 0)[2 * (top - lo):2 * (top - lo) + 2 * (min(top + rows, h) - top)]
    out[2 * top:2 * top + band.shape[0], :2 * w] += band.astype(np.float32)


def half_scale_ratio(correction_half: np.ndarray, correction_full_means: np.ndarray) -> float:
  """r of `gate_half_scale`: the rms of the half pass's correction in the band a
  half-resolution image holds over the rms of the full pass's there, both at
  half resolution (`correction_full_means`: the 2x2 block means of the full
  pass's correction)."""
  return _band_ratio(_smooth_3(correction_half), correction_full_means)


def _band_ratio(band_half: np.ndarray, correction_full_means: np.ndarray) -> float:
  """`half_scale_ratio` of the half pass's band (`_smooth_3` of its correction)."""
  rms = lambda a: float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
  return rms(band_half) / (rms(correction_full_means) + 1e-6)


def gate_half_scale(out: np.ndarray, image: np.ndarray,
                    half_pass: Callable[[np.ndarray], np.ndarray], threshold: float) -> float:
  """Takes the coarse band of the correction from a half-resolution pass where
  that pass corrects more (not in the paper; docs/models.md, "Choosing the scale
  per image"). In place on `out` [H, W, C] (the full pass's output for `image`,
  float or the uint8 that `to_float` scales).

  A 25-50 px camera shake is 12-25 px at half resolution, where a small net
  removes much of it and at full resolution almost none; on mild blur the full
  pass is better in every band. With x_h the 2x2 block means of the image
  (its even part), c_h = half_pass(x_h) - x_h, B(c) the band a
  half-resolution image holds (2x2 block means, bilinearly upsampled) and c1 =
  out - image, the ratio r = rms(B(up(c_h))) / rms(B(c1)) (computed at half
  resolution: `half_scale_ratio`) says which pass sees more blur. Where r >=
  `threshold`, out becomes image + B(up(c_h)) + c1 - B(c1): the coarse band from
  the half pass, the fine band from the full one. A last odd row or column
  keeps the full pass's output. Returns r.
  """
  h, w, _ = out.shape
  he, we = h - h % 2, w - w % 2
  if he < 2 or we < 2:
    return 0.0
  xh = _block_means(image[:he, :we])
  band_half = _smooth_3(np.asarray(half_pass(xh), np.float32) - xh)
  correction_full_means = _block_means(out[:he, :we]) - xh
  r = _band_ratio(band_half, correction_full_means)
  if r >= threshold:
    _add_upsampled(out, band_half - correction_full_means)
  return r


def _deblur_tiled(fn: DeblurFn, image: np.ndarray, tile: int, tile_overlap: int,
                  tile_batch_size: int, progress: Callable[[int, int], None] | None
                  ) -> np.ndarray:
  """The stitched tiles (`deblur_array`): one float32 accumulator. A tile's
  window is separable and so is their sum (`weight_sum` = outer(sum of the
  row ramps, sum of the column ramps): the tiles lie on a grid), so each
  window is divided by the sum first and the accumulator is the result."""
  h, w, c = image.shape
  stride = _stride(fn)
  if tile <= 0 or tile % stride:
    raise ValueError(f"tile must be a positive multiple of {stride} (the generator's total "
                     f"stride), got {tile}")
  if not 0 <= tile_overlap < tile:
    raise ValueError(f"need 0 <= tile_overlap < tile, got tile_overlap={tile_overlap}, tile={tile}")
  th, tw = min(tile, h), min(tile, w)
  ys, xs = tile_starts(h, tile, tile_overlap), tile_starts(w, tile, tile_overlap)
  ramp_y = {y: _ramp(th, tile_overlap, y > 0, y + th < h) for y in ys}
  ramp_x = {x: _ramp(tw, tile_overlap, x > 0, x + tw < w) for x in xs}
  sum_y, sum_x = np.zeros(h), np.zeros(w)
  for y in ys:
    sum_y[y:y + th] += ramp_y[y]
  for x in xs:
    sum_x[x:x + tw] += ramp_x[x]
  out = np.zeros((h, w, c), np.float32)
  tiles = [(y, x) for y in ys for x in xs]
  for i in range(0, len(tiles), tile_batch_size):
    batch = tiles[i:i + tile_batch_size]
    crops = [_as_float(image[y:y + th, x:x + tw]) for y, x in batch]
    crops += [crops[-1]] * (tile_batch_size - len(crops))
    result = np.asarray(fn(np.stack(crops)), np.float32)
    for j, (y, x) in enumerate(batch):
      weight = np.outer(ramp_y[y] / sum_y[y:y + th], ramp_x[x] / sum_x[x:x + tw])
      out[y:y + th, x:x + tw] += result[j] * weight.astype(np.float32)[..., None]
    del result
    if progress is not None:
      progress(i + len(batch), len(tiles))
  return out


def deblur_image(fn: DeblurFn, image_uint8: np.ndarray, options: Options | None = None, *,
                 tile: int | None = None, tile_overlap: int | None = None,
                 tile_batch_size: int = 1, low_freq_sigma: float | None = None,
                 max_memory: float | None = None, scale_gate: float | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """Deblurs a uint8 [H, W, C] image; returns uint8 [H, W, fn.channels].

  An RGB or grey image is first converted to the channels of `fn` (its
  `channels` attribute, as `make_deblur_fn` sets it; `image_io.to_channels`:
  a grayscale model gets Pillow's luma of an RGB image). Scales to [-1, 1],
  runs `deblur_array` with `options` (default `fn.options`, which
  `deblur_fn_for` sets, else the paper's protocol) and the keyword arguments
  that are not None over it (whole or tiled: an explicit `tile`, or the tiles
  the budget `max_memory` in GiB needs, `plan_tile`; with the input's low
  frequencies when `low_freq_sigma` > 0; `progress(tiles_done, tiles_total)`;
  see there), and quantizes with `metrics.quantize`.

  The same numbers as `to_uint8(deblur_array(fn, to_float(image)))`, without
  the float copy of the image: tiles are scaled as they are cut, the result
  is quantized in place. Host memory: `host_bytes`.
  """
  o = _effective(fn, options, tile=tile, tile_overlap=tile_overlap,
                 low_freq_sigma=low_freq_sigma, max_memory=max_memory, scale_gate=scale_gate)
  image_uint8 = np.asarray(image_uint8)
  if image_uint8.dtype != np.uint8 or image_uint8.ndim != 3:
    raise ValueError(f"expected a uint8 [H, W, C] image ([H, W, 3] RGB, [H, W, 1] grey), got "
                     f"{image_uint8.dtype} {image_uint8.shape}")
  if hasattr(fn, "channels"):
    image_uint8 = image_io.to_channels(image_uint8, fn.channels)
  return _to_uint8_inplace(_deblur(fn, image_uint8, o, tile_batch_size, progress))
