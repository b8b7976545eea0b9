"""Training pairs drawn inside the compiled step, on the device: the coarse task.

`main`'s pipeline makes its pairs in grain workers on the host (about 60
records of 256 px a second from 14 workers on an H100, docs/accelerator.md);
an accelerator running the small net waits on it. For blur that is small at a
coarse scale (a 25-60 px camera shake is 6-15 px at 1/4 of the resolution) the
pairs can be made where the step runs, tens of thousands a second:

* the training photographs, area-downsampled by each factor of `photo_scales`,
  sit on the device zero-padded to one shape (`photo_bank`);
* each pair takes a random photograph, a random `crop + K - 1` square of it
  (turned by one of its 8 rotations and flips with `augment`), a random PSF of
  a pool of Boracchi-Foi camera shakes (`shake_pool`, each PSF in its 8
  rotations and flips: `dihedral`), a 'valid' convolution (one grouped
  convolution for the batch, or FFTs: XLA's CPU backend runs grouped
  convolutions slowly), and Gaussian noise of a random std up to `noise`; a
  share `p_sharp` of the pairs is left unblurred (noise only), so the net
  learns to leave sharp content alone (`make_pairs`);
* a share `p_dynamic` of the pairs gets an object (an ellipse cut from another
  crop) moving in a straight line over that background, blurred by its own
  motion with occlusion (`layered_blur`): blur that varies across the image,
  as in the dynamic scenes of GOPRO and of `synthetic.dynamic_scene`.

`CoarseTask` holds all of it as one pytree (the arrays are its leaves, the
sizes static), an argument of the jitted training step: with a generator that
has a coarse pass (`model.coarse_down`), `steps.train_step` adds
`weight * L(G_coarse(blurry), sharp)` on a batch it draws (config.coarse_task,
`coarse_task_from_config`). Not in the paper: its nets see only GOPRO crops.
The experiments that led here: docs/models.md, "Blind training at accelerator
scale" (`experiments/gpu_blind.py` trains a coarse net alone with these pairs).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

BLUR_MODES = ("conv", "fft")


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [H/f, W/f, 3] in [0, 1], block means (the
  image cropped to a multiple of `factor` first)."""
  h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
  x = image[:h, :w].astype(np.float32) / 255.0
  return x.reshape(h // factor, factor, w // factor, factor, image.shape[2]).mean(axis=(1, 3))


def shake_pool(n: int, extent: tuple[float, float], size: int, seed: int) -> np.ndarray:
  """[n, size, size] camera-shake PSFs of extent uniform in `extent` px
  (`synthetic.shake_psf_with_extent`), centred, zero-padded to `size` (a draw
  whose support does not fit is drawn again)."""
  from flax_gradnet.data import synthetic  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  pool = np.zeros((n, size, size), np.float32)
  for i in range(n):
    for _ in range(100):
      k = synthetic.shake_psf_with_extent(rng, rng.uniform(*extent))
      if k.shape[0] <= size and k.shape[1] <= size:
        break
    else:
      raise ValueError(f"kernel_size {size} is too small for shakes of extent {tuple(extent)} px "
                       f"(last PSF drawn: {k.shape[0]} px); raise it.")
    o0, o1 = (size - k.shape[0]) // 2, (size - k.shape[1]) // 2
    pool[i, o0:o0 + k.shape[0], o1:o1 + k.shape[1]] = k
  return pool


def dihedral(pool: np.ndarray) -> np.ndarray:
  """Each PSF of [n, K, K] in its 8 rotations and flips: [8n, K, K] float32."""
  out = [np.rot90(pool, r, axes=(1, 2)) for r in range(4)]
  out += [o[:, :, ::-1] for o in out]
  return np.ascontiguousarray(np.concatenate(out), np.float32)


def photo_bank(photos: Sequence[np.ndarray], scales: Sequence[int],
               min_side: int) -> tuple[np.ndarray, np.ndarray]:
  """(photos [P, Hmax, Wmax, 3] float32 in [0, 1], zero-padded; sizes [P, 2] int32):
  each uint8 photograph area-downsampled by each factor of `scales`, those
  smaller than `min_side` on a side left out.

  Raises:
    ValueError: when none is left.
  """
  small = [downsample(p, int(f)) for p in photos for f in scales]
  small = [p for p in small if min(p.shape[:2]) >= min_side]
  if not small:
    raise ValueError(f"no training photograph is at least {min_side} px on each side at the "
                     f"scales 1/{list(scales)}; lower the crop or the scales, or add photographs")
  hmax, wmax = max(p.shape[0] for p in small), max(p.shape[1] for p in small)
  bank = np.zeros((len(small), hmax, wmax, 3), np.float32)
  for i, p in enumerate(small):
    bank[i, :p.shape[0], :p.shape[1]] = p
  return bank, np.array([p.shape[:2] for p in small], np.int32)


def valid_blur(regions: jax.Array, kern: jax.Array, blur: str = "conv") -> jax.Array:
  """'valid' convolution of each [S, S, C] region of `regions` [B, S, S, C] with
  its own PSF of `kern` [B, K, K]: [B, S-K+1, S-K+1, C]. `blur`: "conv" (one
  grouped convolution: channel (b, c) meets pair b's PSF) or "fft" (the same
  through FFTs: XLA's CPU backend runs grouped convolutions slowly)."""
  if blur not in BLUR_MODES:
    raise ValueError(f"blur must be one of {BLUR_MODES}, got {blur!r}")
  batch, side, _, channels = regions.shape
  k = kern.shape[-1]
  crop = side - k + 1
  if blur == "conv":
    lhs = regions.transpose(1, 2, 0, 3).reshape(1, side, side, batch * channels)
    rhs = jnp.repeat(kern[:, ::-1, ::-1], channels, axis=0).transpose(1, 2, 0)[:, :, None, :]
    out = jax.lax.conv_general_dilated(
        lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=batch * channels, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(crop, crop, batch, channels).transpose(2, 0, 1, 3)
  # The circular convolution of size `side` equals the linear one wherever the
  # kernel does not wrap: the 'valid' part, from index K - 1 on.
  spectrum = jnp.fft.rfft2(regions, axes=(1, 2)) * jnp.fft.rfft2(kern, s=(side, side))[..., None]
  return jnp.fft.irfft2(spectrum, s=(side, side), axes=(1, 2))[:, k - 1:, k - 1:]


def line_psf(length: jax.Array, angle: jax.Array, size: int) -> jax.Array:
  """[size, size] PSF of a straight motion of `length` px at `angle` (radians,
  x to the right, y down), centred on pixel size // 2: each pixel weighs
  max(0, 1 - its distance to the segment), normalised to sum 1 (an object
  moving at constant speed over the exposure)."""
  c = size // 2
  yy, xx = jnp.mgrid[:size, :size].astype(jnp.float32) - c
  dx, dy = jnp.cos(angle), jnp.sin(angle)
  t = jnp.clip(xx * dx + yy * dy, -length / 2, length / 2)  # the nearest point's position
  dist = jnp.hypot(xx - t * dx, yy - t * dy)
  w = jnp.maximum(0.0, 1.0 - dist)
  return w / w.sum()


def ellipse(side: int, cy: jax.Array, cx: jax.Array, ry: jax.Array, rx: jax.Array,
            angle: jax.Array) -> jax.Array:
  """[side, side, 1] anti-aliased ellipse in [0, 1]: centre (cy, cx), radii
  (ry, rx) px, turned by `angle`; a 1-px ramp at its edge (the formula of
  `synthetic._ellipse_matte`, whose dynamic scenes cut their objects so)."""
  yy, xx = jnp.mgrid[:side, :side].astype(jnp.float32)
  u = (xx - cx) * jnp.cos(angle) + (yy - cy) * jnp.sin(angle)
  v = -(xx - cx) * jnp.sin(angle) + (yy - cy) * jnp.cos(angle)
  r = jnp.sqrt((u / rx) ** 2 + (v / ry) ** 2)
  return jnp.clip((1.0 - r) * jnp.minimum(rx, ry) + 0.5, 0.0, 1.0)[..., None]


def ellipse_matte(key: jax.Array, side: int, crop: int) -> jax.Array:
  """A random `ellipse` in a window of `side`: radii 12-35% of `crop`, any
  angle, its centre in the middle 80% of the window's central `crop` square."""
  kr, kc, ka = jax.random.split(key, 3)
  ry, rx = jax.random.uniform(kr, (2,), minval=0.12, maxval=0.35) * crop
  cy, cx = (side - crop) / 2 + jax.random.uniform(kc, (2,), minval=0.1, maxval=0.9) * crop
  return ellipse(side, cy, cx, ry, rx, jax.random.uniform(ka, (), maxval=jnp.pi))


def layered_blur(background: jax.Array, texture: jax.Array, matte: jax.Array,
                 kb: jax.Array, ko: jax.Array, blur: str = "conv") -> tuple[jax.Array, jax.Array]:
  """A moving object over a blurred background, the layered model of blur with
  occlusion: (blurry, sharp) where

    blurry = (background * kb) (1 - matte * ko) + (texture matte) * ko,
    sharp = background (1 - matte) + texture matte  (its central crop),

  `*` the 'valid' convolution (`valid_blur`), each pair with its own PSFs kb,
  ko [B, K, K]; background, texture [B, S, S, 3], matte [B, S, S, 1]. Its blur
  varies across the image (background, object, their edges), as in a dynamic
  scene; unlike `synthetic.dynamic_scene`'s frames it ignores what the moving
  object uncovers of the background behind it."""
  k = kb.shape[-1]
  crop = background.shape[1] - k + 1
  bg = valid_blur(background, kb, blur)
  front = valid_blur(jnp.concatenate([texture * matte, matte], axis=-1), ko, blur)
  blurry = bg * (1.0 - front[..., 3:]) + front[..., :3]
  o = k // 2
  m = matte[:, o:o + crop, o:o + crop]
  sharp = background[:, o:o + crop, o:o + crop] * (1.0 - m) + texture[:, o:o + crop, o:o + crop] * m
  return blurry, sharp


def _random_crops(kp: jax.Array, kt: jax.Array, kl: jax.Array, photos: jax.Array,
                  sizes: jax.Array, batch: int, side: int) -> jax.Array:
  """[batch, side, side, 3]: a `side` square of a random photograph of the bank
  at a random place inside its true size (keys: photograph, top, left)."""
  idx = jax.random.randint(kp, (batch,), 0, photos.shape[0])
  hw = sizes[idx]
  top = jnp.floor(jax.random.uniform(kt, (batch,)) * (hw[:, 0] - side + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(kl, (batch,)) * (hw[:, 1] - side + 1)).astype(jnp.int32)
  return jax.vmap(lambda i, t, l: jax.lax.dynamic_slice(photos[i], (t, l, 0), (side, side, 3)))(
      idx, top, left)


def make_pairs(key: jax.Array, photos: jax.Array, sizes: jax.Array, psfs: jax.Array, *,
               batch: int, crop: int, noise: float, augment: bool = False,
               p_sharp: float = 0.0, blur: str = "conv", p_dynamic: float = 0.0,
               object_motion: Sequence[float] = (2.0, 15.0)) -> tuple[jax.Array, jax.Array]:
  """One batch of (blurry, sharp) [batch, crop, crop, 3] in [-1, 1], drawn on the device.

  photos: [P, Hmax, Wmax, 3] float32 in [0, 1], zero-padded; sizes: [P, 2] int32
  (`photo_bank`); psfs: [Q, K, K]. A crop of side `crop + K - 1` is blurred
  'valid' to `crop`, so no pixel of the blurry image reads outside the
  photograph; `augment` turns each crop by one of the square's 8 rotations and
  flips first; a share `p_sharp` of the pairs gets the identity PSF (noise
  only). `blur`: "conv" (one grouped convolution) or "fft" (the same function
  through FFTs: XLA's CPU backend runs grouped convolutions slowly).

  A share `p_dynamic` of the pairs becomes a dynamic scene (`layered_blur`): an
  ellipse cut from another random crop of the bank moves over the (shaken or,
  with p_sharp, still) background along a straight line of `object_motion` px
  (`line_psf`), so the blur varies across the image. With p_dynamic = 0 (the
  default) no such draw is made and the pairs are those of earlier versions.
  """
  if blur not in BLUR_MODES:
    raise ValueError(f"blur must be one of {BLUR_MODES}, got {blur!r}")
  photos, sizes, psfs = jnp.asarray(photos), jnp.asarray(sizes), jnp.asarray(psfs)
  k = psfs.shape[-1]
  side = crop + k - 1
  kp, kt, kl, kk, kn, ks, ka, k_sharp = jax.random.split(key, 8)
  regions = _random_crops(kp, kt, kl, photos, sizes, batch, side)  # [B, side, side, 3]
  if augment:
    turns = [lambda r, n=n: jnp.rot90(r, n) for n in range(4)]
    turns += [lambda r, n=n: jnp.rot90(r, n)[:, ::-1] for n in range(4)]
    which = jax.random.randint(ka, (batch,), 0, 8)
    regions = jax.vmap(lambda w, r: jax.lax.switch(w, turns, r))(which, regions)
  kern = psfs[jax.random.randint(kk, (batch,), 0, psfs.shape[0])]  # [B, K, K]
  if p_sharp > 0:
    delta = jnp.zeros((k, k), kern.dtype).at[k // 2, k // 2].set(1.0)
    sharp_pair = jax.random.uniform(k_sharp, (batch, 1, 1)) < p_sharp
    kern = jnp.where(sharp_pair, delta, kern)
  if p_dynamic > 0:
    kd = jax.random.fold_in(key, 1)  # its own stream: the draws above stay as they were
    kw, kt2, kl2, kmat, klen, kang, kon = jax.random.split(kd, 7)
    texture = _random_crops(kw, kt2, kl2, photos, sizes, batch, side)
    matte = jax.vmap(lambda kk_: ellipse_matte(kk_, side, crop))(jax.random.split(kmat, batch))
    on = jax.random.uniform(kon, (batch, 1, 1, 1)) < p_dynamic
    matte = jnp.where(on, matte, 0.0)  # no object: the pair is as without
    lo, hi = object_motion
    length = jax.random.uniform(klen, (batch,), minval=lo, maxval=hi)
    angle = jax.random.uniform(kang, (batch,), maxval=2 * jnp.pi)
    ko = jax.vmap(lambda l_, a_: line_psf(l_, a_, k))(length, angle)
    blurred, sharp = layered_blur(regions, texture, matte, kern, ko, blur)
  else:
    blurred = valid_blur(regions, kern, blur)
    o = k // 2
    sharp = regions[:, o:o + crop, o:o + crop]
  sigma = jax.random.uniform(ks, (batch, 1, 1, 1)) * noise
  blurred = jnp.clip(blurred + sigma * jax.random.normal(kn, blurred.shape), 0.0, 1.0)
  return blurred * 2 - 1, sharp * 2 - 1


@flax.struct.dataclass
class CoarseTask:
  """The coarse pass's own training task: its arrays (leaves) and settings (static).

  `pairs(key)` draws one batch with `make_pairs`; `steps.train_step` adds
  `weight` times the content loss of the generator's coarse pass on it.
  """

  photos: jax.Array  # [P, Hmax, Wmax, 3] float32 in [0, 1] (photo_bank)
  sizes: jax.Array  # [P, 2] int32
  psfs: jax.Array  # [Q, K, K] float32
  weight: float = flax.struct.field(pytree_node=False, default=1.0)
  batch: int = flax.struct.field(pytree_node=False, default=32)
  crop: int = flax.struct.field(pytree_node=False, default=48)
  noise: float = flax.struct.field(pytree_node=False, default=0.005)
  augment: bool = flax.struct.field(pytree_node=False, default=True)
  p_sharp: float = flax.struct.field(pytree_node=False, default=0.15)
  blur: str = flax.struct.field(pytree_node=False, default="conv")
  p_dynamic: float = flax.struct.field(pytree_node=False, default=0.0)
  object_motion: tuple[float, float] = flax.struct.field(pytree_node=False, default=(2.0, 15.0))
  # The coarse warm-up's shakes ([Q, K, K], config.coarse_task.warmup_extent); None: `psfs`.
  warmup_psfs: jax.Array | None = None

  def pairs(self, key: jax.Array, *, warmup: bool = False) -> tuple[jax.Array, jax.Array]:
    """A batch of pairs; `warmup=True`: under the warm-up's shakes (`warmup_psfs`)."""
    psfs = self.warmup_psfs if warmup and self.warmup_psfs is not None else self.psfs
    return make_pairs(key, self.photos, self.sizes, psfs, batch=self.batch, crop=self.crop,
                      noise=self.noise, augment=self.augment, p_sharp=self.p_sharp,
                      blur=self.blur, p_dynamic=self.p_dynamic,
                      object_motion=self.object_motion)


def _enabled_task(config: Any) -> Any:
  """config.coarse_task when it is on (a weight other than 0), else None."""
  task = config.get("coarse_task")
  return task if task is not None and task.get("weight", 0.0) else None


def warmup_steps(config: Any) -> int:
  """config.coarse_task.warmup_steps: the first steps of a run, in which the
  coarse net alone trains on its task (`steps.coarse_warmup_step`); 0 when the
  task is off."""
  task = _enabled_task(config)
  return int(task.get("warmup_steps", 0)) if task is not None else 0


def check_warmup_fits(warmup: int, total_steps: int) -> None:
  """Raises naming config.coarse_task.warmup_steps when a warm-up of `warmup` steps
  leaves none of a run's `total_steps` for the whole generator."""
  if warmup and warmup >= total_steps:
    raise ValueError(f"config.coarse_task.warmup_steps={warmup} leaves none of the run's "
                     f"{total_steps} steps (config.num_train_steps) for the whole generator; "
                     "make it smaller or the run longer.")


def check_coarse_task(config: Any, num_devices: int | None = None) -> None:
  """Raises a one-line error naming the field when config.coarse_task cannot run
  on `num_devices` (default: all of them). Reads nothing."""
  task = _enabled_task(config)
  if task is None:
    return
  down = int(config.model.get("coarse_down", 0))
  if down < 2:
    raise ValueError(f"config.coarse_task.weight={task.weight} trains the generator's coarse "
                     f"pass, but config.model.coarse_down={down} gives it none: set "
                     "model.coarse_down >= 2 or coarse_task.weight = 0.")
  if task.weight < 0:
    raise ValueError(f"config.coarse_task.weight must be >= 0 (0 = off), got {task.weight}")
  for name in ("batch", "crop", "kernel_size", "pool"):
    if not (isinstance(task[name], int) and task[name] >= 1):
      raise ValueError(f"config.coarse_task.{name} must be an integer >= 1, got {task[name]!r}")
  lo, hi = task.extent
  if not 0 < lo <= hi:
    raise ValueError(f"config.coarse_task.extent must be (low, high) px with 0 < low <= high, "
                     f"got {tuple(task.extent)}")
  if not 0.0 <= task.p_sharp <= 1.0:
    raise ValueError(f"config.coarse_task.p_sharp must be in [0, 1], got {task.p_sharp}")
  warmup = task.get("warmup_steps", 0)
  if not (isinstance(warmup, int) and warmup >= 0):
    raise ValueError(f"config.coarse_task.warmup_steps must be an integer >= 0 (0 = none), "
                     f"got {warmup!r}")
  warmup_extent = tuple(task.get("warmup_extent", ()))
  if warmup_extent and not (len(warmup_extent) == 2 and 0 < warmup_extent[0] <= warmup_extent[1]):
    raise ValueError(f"config.coarse_task.warmup_extent must be () (the warm-up draws from "
                     f"extent) or (low, high) px with 0 < low <= high, got {warmup_extent}")
  if config.get("num_train_steps", 0) > 0:  # else the run's length comes from its epochs
    check_warmup_fits(warmup, config.num_train_steps)
  if task.noise < 0:
    raise ValueError(f"config.coarse_task.noise must be >= 0, got {task.noise}")
  if task.blur not in BLUR_MODES:
    raise ValueError(f"config.coarse_task.blur must be one of {BLUR_MODES}, got {task.blur!r}")
  if not task.photo_scales or any(int(f) < 1 for f in task.photo_scales):
    raise ValueError("config.coarse_task.photo_scales must be factors >= 1 (e.g. (3, 4, 5, 6)), "
                     f"got {tuple(task.photo_scales)}")
  p_dynamic = task.get("p_dynamic", 0.0)
  if not 0.0 <= p_dynamic <= 1.0:
    raise ValueError(f"config.coarse_task.p_dynamic must be in [0, 1], got {p_dynamic}")
  lo, hi = task.get("object_motion", (2.0, 15.0))
  if p_dynamic > 0 and not (0 <= lo <= hi and hi <= task.kernel_size - 1):
    raise ValueError(f"config.coarse_task.object_motion must be (low, high) px with 0 <= low <= "
                     f"high <= kernel_size - 1 = {task.kernel_size - 1}, got ({lo}, {hi})")
  devices = jax.device_count() if num_devices is None else num_devices
  if task.batch % devices:
    raise ValueError(f"config.coarse_task.batch={task.batch} must be a multiple of the {devices} "
                     "device(s): its pairs are split over them.")


def coarse_task_from_config(config: Any) -> CoarseTask | None:
  """The `CoarseTask` of config.coarse_task (None when its weight is 0): the
  training photographs (the built-in ones never held out, plus
  config.dataset_options.photo_dir) at each of `photo_scales`, and a pool of
  `pool` shakes of `extent` px (at the coarse scale) in their 8 rotations and
  flips, drawn from `seed`. Every process builds the same one."""
  check_coarse_task(config)
  task = _enabled_task(config)
  if task is None:
    return None
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  photos = list(online.training_photographs().values())
  photo_dir = config.get("dataset_options", {}).get("photo_dir", "")
  if photo_dir:
    photos += list(online.folder_photographs(os.path.expanduser(photo_dir)).values())
  bank, sizes = photo_bank(photos, task.photo_scales, task.crop + task.kernel_size - 1)
  psfs = dihedral(shake_pool(task.pool, tuple(task.extent), task.kernel_size, task.seed))
  warmup_extent = tuple(task.get("warmup_extent", ()))
  warmup_psfs = (dihedral(shake_pool(task.pool, warmup_extent, task.kernel_size, task.seed))
                 if warmup_extent and warmup_steps(config) else None)
  return CoarseTask(photos=bank, sizes=sizes, psfs=psfs, weight=float(task.weight),
                    batch=task.batch, crop=task.crop, noise=float(task.noise),
                    augment=bool(task.augment), p_sharp=float(task.p_sharp), blur=task.blur,
                    p_dynamic=float(task.get("p_dynamic", 0.0)),
                    object_motion=tuple(float(v) for v in task.get("object_motion", (2.0, 15.0))),
                    warmup_psfs=warmup_psfs)
