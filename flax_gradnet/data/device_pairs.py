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
  learns to leave sharp content alone (`make_pairs`).

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


def make_pairs(key: jax.Array, photos: jax.Array, sizes: jax.Array, psfs: jax.Array, *,
               batch: int, crop: int, noise: float, augment: bool = False,
               p_sharp: float = 0.0, blur: str = "conv") -> tuple[jax.Array, jax.Array]:
  """One batch of (blurry, sharp) [batch, crop, crop, 3] in [-1, 1], drawn on the device.

  photos: [P, Hmax, Wmax, 3] float32 in [0, 1], zero-padded; sizes: [P, 2] int32
  (`photo_bank`); psfs: [Q, K, K]. A crop of side `crop + K - 1` is blurred
  'valid' to `crop`, so no pixel of the blurry image reads outside the
  photograph; `augment` turns each crop by one of the square's 8 rotations and
  flips first; a share `p_sharp` of the pairs gets the identity PSF (noise
  only). `blur`: "conv" (one grouped convolution) or "fft" (the same function
  through FFTs: XLA's CPU backend runs grouped convolutions slowly).
  """
  if blur not in BLUR_MODES:
    raise ValueError(f"blur must be one of {BLUR_MODES}, got {blur!r}")
  photos, sizes, psfs = jnp.asarray(photos), jnp.asarray(sizes), jnp.asarray(psfs)
  k = psfs.shape[-1]
  side = crop + k - 1
  kp, kt, kl, kk, kn, ks, ka, k_sharp = jax.random.split(key, 8)
  idx = jax.random.randint(kp, (batch,), 0, photos.shape[0])
  hw = sizes[idx]
  top = jnp.floor(jax.random.uniform(kt, (batch,)) * (hw[:, 0] - side + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(kl, (batch,)) * (hw[:, 1] - side + 1)).astype(jnp.int32)
  regions = jax.vmap(lambda i, t, l: jax.lax.dynamic_slice(photos[i], (t, l, 0), (side, side, 3)))(
      idx, top, left)  # [B, side, side, 3]
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
  if blur == "conv":
    # One grouped convolution: channel (b, c) of the input meets pair b's PSF.
    lhs = regions.transpose(1, 2, 0, 3).reshape(1, side, side, batch * 3)
    rhs = jnp.repeat(kern[:, ::-1, ::-1], 3, axis=0).transpose(1, 2, 0)[:, :, None, :]
    blurred = jax.lax.conv_general_dilated(
        lhs, rhs, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=batch * 3, precision=jax.lax.Precision.HIGHEST)
    blurred = blurred.reshape(crop, crop, batch, 3).transpose(2, 0, 1, 3)
  else:
    # The circular convolution of size `side` equals the linear one wherever the
    # kernel does not wrap: the 'valid' part, from index K - 1 on.
    spectrum = jnp.fft.rfft2(regions, axes=(1, 2)) * jnp.fft.rfft2(kern, s=(side, side))[..., None]
    blurred = jnp.fft.irfft2(spectrum, s=(side, side), axes=(1, 2))[:, k - 1:, k - 1:]
  sigma = jax.random.uniform(ks, (batch, 1, 1, 1)) * noise
  blurred = jnp.clip(blurred + sigma * jax.random.normal(kn, blurred.shape), 0.0, 1.0)
  o = k // 2
  sharp = regions[:, o:o + crop, o:o + crop]
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

  def pairs(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    return make_pairs(key, self.photos, self.sizes, self.psfs, batch=self.batch, crop=self.crop,
                      noise=self.noise, augment=self.augment, p_sharp=self.p_sharp,
                      blur=self.blur)


def _enabled_task(config: Any) -> Any:
  """config.coarse_task when it is on (a weight other than 0), else None."""
  task = config.get("coarse_task")
  return task if task is not None and task.get("weight", 0.0) else None


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
  if task.noise < 0:
    raise ValueError(f"config.coarse_task.noise must be >= 0, got {task.noise}")
  if task.blur not in BLUR_MODES:
    raise ValueError(f"config.coarse_task.blur must be one of {BLUR_MODES}, got {task.blur!r}")
  if not task.photo_scales or any(int(f) < 1 for f in task.photo_scales):
    raise ValueError("config.coarse_task.photo_scales must be factors >= 1 (e.g. (3, 4, 5, 6)), "
                     f"got {tuple(task.photo_scales)}")
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
  return CoarseTask(photos=bank, sizes=sizes, psfs=psfs, weight=float(task.weight),
                    batch=task.batch, crop=task.crop, noise=float(task.noise),
                    augment=bool(task.augment), p_sharp=float(task.p_sharp), blur=task.blur)
