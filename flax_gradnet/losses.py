"""The paper's losses (Sec. 3.2, Eqs. (8)-(11)) as pure, jit-able functions.

Images are NHWC in [-1, 1]. Critic scores are per sample, shape [B]; a
PatchGAN score map is reduced with `patch_scores` first. docs/losses.md gives
how each equation was read.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _f32(x: Array) -> Array:
  return jnp.asarray(x).astype(jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


def content_loss(feature_fn: Callable[[Array], Array], pred: Array, target: Array) -> Array:
  """Perceptual content loss, Eq. (8).

  Eq. (8) prints `1/(CWH) sum_{x,y} ||phi(s)_{x,y} - phi(G(b))_{x,y}||_2`; its
  source, Johnson et al. [41] (and DeblurGAN [37], which the paper builds on),
  use the squared distance, i.e. the mean squared difference of the features.
  That is what is computed here (also averaged over the batch).

  Args:
    feature_fn: phi, e.g. `vgg.make_feature_fn(variables, "relu4_3")`, which
      also takes grayscale images (repeated to three channels).
    pred: G(b), generated images [B, H, W, 3] (or [B, H, W, 1]).
    target: s, sharp images of the same shape; no gradient flows into them or
      their features, and their VGG pass is not differentiated.

  Returns:
    Scalar float32 mean over B, H', W', C of (phi(pred) - phi(target))**2.
  """
  target_features = jax.lax.stop_gradient(feature_fn(jax.lax.stop_gradient(target)))
  return jnp.mean(jnp.square(_f32(feature_fn(pred)) - _f32(target_features)))


def pixel_content_loss(pred: Array, target: Array) -> Array:
  """Stand-in for Eq. (8) when no VGG19 weights are available (quickstart).

  Mean squared error on pixels: Eq. (8) as read in `content_loss` with phi the
  identity, so `alpha` keeps its role and only the feature map changes. It is
  NOT the paper's perceptual loss and gives blurrier results; use VGG19 weights
  for any reported number.

  Args:
    pred: generated images [B, H, W, C].
    target: sharp images [B, H, W, C] (under stop_gradient).

  Returns:
    Scalar float32 mean of (pred - target)**2.
  """
  return jnp.mean(jnp.square(_f32(pred) - _f32(jax.lax.stop_gradient(target))))


# 50 dB on images in [0, 1]: a per-image MSE floor (in [-1, 1] units, 4x the
# [0, 1] MSE) so that a crop the net already reproduces exactly (a flat or
# unblurred one) cannot dominate the batch with an unbounded log.
PSNR_LOSS_FLOOR = 4e-5


def psnr_content_loss(pred: Array, target: Array, floor: float = PSNR_LOSS_FLOOR) -> Array:
  """Per-image log-MSE ("PSNR loss", as HINet and NAFNet train): a stand-in for
  Eq. (8) that weights every image by the reciprocal of its own error.

  `10 log10(mse_i + floor)` averaged over the batch, i.e. minus the mean PSNR
  of images in [-1, 1] up to a constant. Its gradient for image i is that of
  the pixel MSE times `10 / (ln 10 (mse_i + floor))`, so a nearly sharp crop
  counts as much, in dB, as a heavily blurred one: the objective is the mean
  per-image PSNR gain that evaluation reports, not the mean squared error that
  heavy blur dominates. Not in the paper; `alpha` scales dB here (0.02 puts a
  crop at ~27 dB on the pixel MSE's scale with alpha=10).

  Args:
    pred: generated images [B, H, W, C].
    target: sharp images [B, H, W, C] (under stop_gradient).
    floor: added to each image's MSE (in [-1, 1] units) before the log.

  Returns:
    Scalar float32 mean over the batch of 10 log10(mse_i + floor).
  """
  err = jnp.square(_f32(pred) - _f32(jax.lax.stop_gradient(target)))
  mse = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
  return jnp.mean(10.0 * jnp.log10(mse + floor))


def gaussian_blur_reflect(x: Array, sigma: float) -> Array:
  """Gaussian filter of NHWC `x` over H and W, as scipy.ndimage.gaussian_filter
  with mode="reflect" and truncate=4 (the kernel renormalised to sum 1).

  Computed through the DCT-II, whose basis is the eigenbasis of a symmetric
  kernel under half-sample symmetric ("reflect") extension: one forward and one
  inverse transform whatever `sigma`, also when the kernel outgrows the image.
  The JAX twin of `inference._gaussian_reflect` (numpy), differentiable. `sigma`
  is static (a Python number, in pixels).
  """
  if x.ndim != 4:
    raise ValueError(f"gaussian_blur_reflect expects NHWC images, got shape {x.shape}")
  if not sigma > 0:
    raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
  x = _f32(x)
  coeffs = jax.scipy.fft.dctn(x, type=2, axes=(1, 2))
  for axis in (1, 2):
    shape = [1, 1, 1, 1]
    shape[axis] = x.shape[axis]
    response = gaussian_dct_response(x.shape[axis], sigma).reshape(shape)
    coeffs = coeffs * jnp.asarray(response, coeffs.dtype)
  return jax.scipy.fft.idctn(coeffs, type=2, axes=(1, 2))


def gaussian_dct_response(n: int, sigma: float) -> np.ndarray:
  """float64 [n]: how a length-`n` axis's DCT-II coefficients scale under
  scipy's reflect Gaussian filter (truncate=4, kernel summing to 1): the
  kernel's cosine transform at each DCT frequency."""
  radius = int(4.0 * sigma + 0.5)
  taps = np.arange(-radius, radius + 1)
  g = np.exp(-0.5 * (taps / sigma) ** 2)
  g /= g.sum()
  return np.cos(np.pi * np.outer(np.arange(n), taps) / n) @ g


def keep_low_frequencies(pred: Array, reference: Array, sigma: float) -> Array:
  """`pred` with its content below a Gaussian of `sigma` pixels replaced by
  `reference`'s: pred - G*(pred - reference), not clipped.

  Training's counterpart of `inference.keep_input_low_frequencies` (which
  clips): with `config.loss_low_freq_sigma` the generator's losses read its
  output as `deblur` returns it by default, so the net is not asked to fix the
  low frequencies that inference takes from the blurry input anyway (a blur
  kernel sums to one: content far below its size is the same in the sharp and
  the blurry photograph). `reference` is under stop_gradient.
  """
  if pred.shape != reference.shape:
    raise ValueError(f"keep_low_frequencies expects two arrays of one shape, got {pred.shape} "
                     f"and {reference.shape}")
  pred = _f32(pred)
  return pred - gaussian_blur_reflect(pred - _f32(jax.lax.stop_gradient(reference)), sigma)


def image_gradients(x: Array) -> tuple[Array, Array]:
  """Forward differences of NHWC images: (horizontal [B,H,W-1,C], vertical [B,H-1,W,C])."""
  return x[:, :, 1:, :] - x[:, :, :-1, :], x[:, 1:, :, :] - x[:, :-1, :, :]


def gradient_loss(pred: Array, target: Array) -> Array:
  """Structure (gradient) loss, Eq. (9).

  L1 distance between the horizontal forward differences of the generated and
  sharp images plus that between the vertical ones, each the mean over all its
  elements (B, H, W-1, C and B, H-1, W, C): the 1/(WH) of Eq. (9), extended to
  channels and batch.

  Args:
    pred: G(b), generated images [B, H, W, C].
    target: s, sharp images [B, H, W, C] (under stop_gradient).

  Returns:
    Scalar float32 loss.
  """
  if pred.ndim != 4 or pred.shape != target.shape:
    raise ValueError(f"gradient_loss expects two NHWC arrays of one shape, got {pred.shape} "
                     f"and {target.shape}")
  pred_h, pred_v = image_gradients(_f32(pred))
  target_h, target_v = image_gradients(_f32(jax.lax.stop_gradient(target)))
  return jnp.mean(jnp.abs(pred_h - target_h)) + jnp.mean(jnp.abs(pred_v - target_v))


def patch_scores(score_map: Array) -> Array:
  """Per-sample critic scores [B] from a PatchGAN map [B, H', W', 1] (mean over patches)."""
  if score_map.ndim != 4:
    raise ValueError(f"patch_scores expects a [B, H', W', C] score map, got {score_map.shape}")
  return jnp.mean(_f32(score_map), axis=(1, 2, 3))


def _safe_norm(sq_norm: Array) -> Array:
  """sqrt with a finite (zero) derivative at 0: the double-where trick."""
  positive = sq_norm > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq_norm, 1.0)), 0.0)


def gradient_penalty(critic_fn: Callable[[Array], Array], real: Array, fake: Array,
                     rng: Array, weight: float = 10.0) -> Array:
  """WGAN-GP penalty [43], the lambda-term of Eq. (10).

  x_hat = eps * real + (1 - eps) * fake with one eps ~ U[0, 1) per sample
  (`jax.random.uniform(rng, (B, 1, 1, 1))`), then
  `weight * mean_b((||grad_x D(x_hat)_b||_2 - 1)**2)` with the norm over
  H, W, C of each sample.

  The per-sample gradients come from one `jax.grad` of the SUM of the scores:
  sample b's score depends only on x_hat_b, so d(sum)/dx_hat_b = dD_b/dx_hat_b.
  That holds for critics without cross-sample coupling (no batch norm; the
  PatchCritic has none). The norm has a zero derivative at 0 (double where),
  so a locally flat critic gives `weight` and finite gradients, not NaN.

  Args:
    critic_fn: [B, H, W, C] -> per-sample scores [B], closing over the critic
      parameters being trained (e.g. `lambda x: patch_scores(critic.apply(v, x))`).
    real: sharp images s [B, H, W, C].
    fake: generated images G(b) [B, H, W, C].
    rng: PRNG key for eps.
    weight: lambda (10 in WGAN-GP and here).

  Returns:
    Scalar float32 penalty.
  """
  real, fake = jnp.asarray(real), jnp.asarray(fake)
  if real.shape != fake.shape or real.ndim != 4:
    raise ValueError(f"gradient_penalty expects NHWC real and fake of one shape, got "
                     f"{real.shape} and {fake.shape}")
  eps = jax.random.uniform(rng, (real.shape[0], 1, 1, 1), dtype=jnp.float32)
  x_hat = (eps * _f32(real) + (1.0 - eps) * _f32(fake)).astype(real.dtype)

  def total_score(x):
    scores = critic_fn(x)
    if scores.shape != (x.shape[0],):
      raise ValueError(f"critic_fn must return per-sample scores of shape ({x.shape[0]},), got "
                       f"{scores.shape}; reduce a patch map with patch_scores")
    return jnp.sum(_f32(scores))

  grads = _f32(jax.grad(total_score)(x_hat))
  norms = _safe_norm(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))
  return weight * jnp.mean(jnp.square(norms - 1.0))


def critic_loss(real_scores: Array, fake_scores: Array) -> Array:
  """Critic loss of Eq. (10) without the penalty: E[D(G(b))] - E[D(s)]."""
  return jnp.mean(_f32(fake_scores)) - jnp.mean(_f32(real_scores))


def generator_adversarial_loss(fake_scores: Array) -> Array:
  """The generator's part of L_adv in Eq. (11): -E[D(G(b))]."""
  return -jnp.mean(_f32(fake_scores))


def wasserstein_estimate(real_scores: Array, fake_scores: Array) -> Array:
  """The critic's Wasserstein-1 estimate E[D(s)] - E[D(G(b))] (for logging)."""
  return jnp.mean(_f32(real_scores)) - jnp.mean(_f32(fake_scores))


def _is_static_zero(weight) -> bool:
  """True for a concrete zero weight; a traced weight is never skipped."""
  try:
    return float(weight) == 0.0
  except (TypeError, jax.errors.ConcretizationTypeError):
    return False


def generator_loss(pred: Array, target: Array, fake_scores: Array | None, *,
                   content_fn: Callable[[Array, Array], Array], alpha: float = 10.0,
                   beta: float = 1.0, gamma: float = 1.0) -> tuple[Array, dict[str, Array]]:
  """Generator objective, Eq. (11): alpha L_content + beta L_gradient + gamma L_adv.

  A weight that is a concrete 0 skips its term (reported as 0): the Table 4
  ablations "w/o content" (alpha=0) and "w/o gradient" (beta=0) then save the
  VGG19 pass or the differences. Weights must be Python/NumPy numbers (static
  under jit) for the skip; a traced weight always computes its term.

  Args:
    pred: G(b) [B, H, W, C].
    target: s [B, H, W, C].
    fake_scores: critic scores D(G(b)) [B]; may be None when gamma is 0.
    content_fn: `(pred, target) -> scalar`, e.g.
      `functools.partial(content_loss, feature_fn)` or `pixel_content_loss`.
    alpha: weight of the content loss (10 in the paper).
    beta: weight of the gradient loss (1).
    gamma: weight of the adversarial loss (1).

  Returns:
    (total, {"content", "gradient", "adversarial"}): scalar float32 total and
    the unweighted terms.
  """
  zero = jnp.zeros((), jnp.float32)
  terms = {"content": zero, "gradient": zero, "adversarial": zero}
  total = zero
  if not _is_static_zero(alpha):
    terms["content"] = _f32(content_fn(pred, target))
    total = total + alpha * terms["content"]
  if not _is_static_zero(beta):
    terms["gradient"] = gradient_loss(pred, target)
    total = total + beta * terms["gradient"]
  if not _is_static_zero(gamma):
    if fake_scores is None:
      raise ValueError("generator_loss needs fake_scores unless gamma is 0")
    terms["adversarial"] = generator_adversarial_loss(fake_scores)
    total = total + gamma * terms["adversarial"]
  return total, terms
