"""Pairs drawn on the device (data/device_pairs.py), the generator's coarse pass
of its own (`model.coarse_down`) and the step's coarse task."""

import functools
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import signal

from configs import default
from flax_gradnet import inference, losses, steps
from flax_gradnet.data import device_pairs as dp
from flax_gradnet.models import Generator
from flax_gradnet.models.critic import PatchCritic
from flax_gradnet.models.generator import upsample_bilinear

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4, num_paths=2,
            num_recurrences=1, norm="none", residual=True, zero_init_output=True,
            upsample="pixel_shuffle", padding_mode="zeros")


def test_pairs_match_scipy_valid_convolution():
  """A photograph's crop, a PSF of the pool (one grouped convolution for the
  batch, or FFTs), noise. With one photograph exactly a crop's size, one PSF and
  no noise, every blurry image is scipy's 'valid' convolution of the photograph
  with that PSF, and every sharp one the photograph's centre."""
  rng = np.random.default_rng(3)
  crop, k = 10, 5
  photo = rng.uniform(0, 1, (crop + k - 1, crop + k - 1, 3)).astype(np.float32)
  psf = rng.uniform(0, 1, (k, k)).astype(np.float32)
  psf[0, 0] = 3.0  # not symmetric: a flipped kernel would not pass
  psf /= psf.sum()

  def one_photo(seed=0, batch=3, **options):  # the photograph and the PSF alone
    return dp.make_pairs(jax.random.PRNGKey(seed), jnp.asarray(photo[None]),
                         jnp.asarray([[crop + k - 1, crop + k - 1]], jnp.int32),
                         jnp.asarray(psf[None]), batch=batch, crop=crop, noise=0.0, **options)

  blurry, sharp = one_photo()
  want = np.stack([signal.fftconvolve(photo[..., c], psf, mode="valid") for c in range(3)], -1)
  for b in range(3):
    np.testing.assert_allclose((np.asarray(blurry[b]) + 1) / 2, want, atol=1e-5)
    np.testing.assert_allclose((np.asarray(sharp[b]) + 1) / 2, photo[2:2 + crop, 2:2 + crop], atol=1e-6)
  blurry_fft, _ = one_photo(blur="fft")
  for b in range(3):
    np.testing.assert_allclose((np.asarray(blurry_fft[b]) + 1) / 2, want, atol=1e-5)
  with pytest.raises(ValueError, match="blur must be"):
    one_photo(batch=1, blur="wiener")
  # p_sharp = 1: every pair is left unblurred (the identity PSF).
  blurry, sharp = one_photo(p_sharp=1.0)
  np.testing.assert_allclose(np.asarray(blurry), np.asarray(sharp), atol=1e-6)
  # augment: each sharp crop is one of the centre's 8 rotations and flips.
  _, sharp = one_photo(seed=2, batch=16, augment=True)
  centre = photo[2:2 + crop, 2:2 + crop]
  turns = [np.rot90(centre, r) for r in range(4)] + [np.rot90(centre, r)[:, ::-1] for r in range(4)]
  seen = {int(np.argmin([np.abs((np.asarray(s) + 1) / 2 - t).max() for t in turns])) for s in sharp}
  for s in sharp:
    assert min(np.abs((np.asarray(s) + 1) / 2 - t).max() for t in turns) < 1e-6
  assert len(seen) > 2
  # Several photographs and PSFs: each pair is some photograph's crop under some PSF.
  pool = dp.dihedral(np.stack([psf, np.eye(k, dtype=np.float32) / k]))
  assert pool.shape == (16, k, k)
  np.testing.assert_allclose(pool[2], np.rot90(psf), atol=0)  # [rotation][psf]
  np.testing.assert_allclose(pool[8], psf[:, ::-1], atol=0)
  big = rng.uniform(0.01, 1, (2, 30, 40, 3)).astype(np.float32)
  big[1, 20:] = 0.0  # the second photograph is 20 x 40: its padding must never be read
  blurry, sharp = dp.make_pairs(jax.random.PRNGKey(1), jnp.asarray(big),
                                jnp.asarray([[30, 40], [20, 40]]), jnp.asarray(pool), batch=16,
                                crop=crop, noise=0.0)
  for b in range(16):
    s = (np.asarray(sharp[b]) + 1) / 2
    assert s.min() > 0.0  # padding is 0; the photographs' pixels are not
    found = [(i, t, l) for i in range(2) for t in range(big.shape[1] - crop - k + 2)
             for l in range(big.shape[2] - crop - k + 2)
             if np.allclose(big[i, t + 2:t + 2 + crop, l + 2:l + 2 + crop], s, atol=1e-6)]
    assert len(found) == 1
    i, t, l = found[0]
    region = big[i, t:t + crop + k - 1, l:l + crop + k - 1]
    blurs = [np.stack([signal.fftconvolve(region[..., c], q, mode="valid") for c in range(3)], -1)
             for q in pool]
    assert min(np.abs((np.asarray(blurry[b]) + 1) / 2 - w).max() for w in blurs) < 1e-5


def test_downsample_shake_pool_and_photo_bank():
  """Block means in numpy; each pooled PSF sums to 1 with its centroid on the
  centre pixel; a pool that cannot fit is refused; the bank holds every
  photograph at every scale that is large enough, zero-padded, with its size."""
  rng = np.random.default_rng(0)
  u8 = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
  np.testing.assert_allclose(dp.downsample(u8, 2),
                             u8[:8, :10].reshape(4, 2, 5, 2, 3).mean(axis=(1, 3)) / 255.0, atol=1e-6)
  pool = dp.shake_pool(6, (4.0, 6.0), 13, seed=0)
  assert pool.shape == (6, 13, 13)
  np.testing.assert_allclose(pool.sum(axis=(1, 2)), 1.0, atol=1e-5)
  yy, xx = np.mgrid[0:13, 0:13]
  for k in pool:
    assert abs((k * yy).sum() - 6) < 0.5 and abs((k * xx).sum() - 6) < 0.5
  np.testing.assert_array_equal(dp.shake_pool(6, (4.0, 6.0), 13, seed=0), pool)  # seeded
  with pytest.raises(ValueError, match="kernel_size"):
    dp.shake_pool(1, (12.0, 12.0), 5, seed=0)

  photos = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
            rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)]
  bank, sizes = dp.photo_bank(photos, (2, 3), min_side=10)
  # 40x60 at 1/2 and 1/3, 24x30 at 1/2 (12x15); 24x30 at 1/3 (8x10) is too small.
  np.testing.assert_array_equal(sizes, [[20, 30], [13, 20], [12, 15]])
  assert bank.shape == (3, 20, 30, 3) and bank.dtype == np.float32
  np.testing.assert_allclose(bank[2, :12, :15], dp.downsample(photos[1], 2))
  assert not bank[2, 12:].any() and not bank[2, :, 15:].any()
  with pytest.raises(ValueError, match="at least 30 px"):
    dp.photo_bank(photos, (2,), min_side=30)


def test_line_psf_is_a_centred_segment():
  """Analytic cases: length 0 is the identity PSF; a 4-px motion along x (or y)
  is the 5 pixels of the centre row (column), each 1/5; any length and angle
  sums to 1 with its centroid on the centre pixel and its spread along the
  motion growing with the length."""
  delta = np.zeros((9, 9), np.float32)
  delta[4, 4] = 1
  np.testing.assert_allclose(dp.line_psf(0.0, 0.3, 9), delta, atol=1e-7)
  row = np.zeros((9, 9), np.float32)
  row[4, 2:7] = 0.2
  np.testing.assert_allclose(dp.line_psf(4.0, 0.0, 9), row, atol=1e-6)
  np.testing.assert_allclose(dp.line_psf(4.0, np.pi / 2, 9), row.T, atol=1e-6)
  yy, xx = np.mgrid[:25, :25] - 12
  spreads = []
  for length, angle in ((3.0, 0.4), (9.5, 2.0), (20.0, 4.0)):
    k = np.asarray(dp.line_psf(length, angle, 25))
    assert abs(k.sum() - 1) < 1e-5 and k.min() >= 0
    assert abs((k * yy).sum()) < 1e-4 and abs((k * xx).sum()) < 1e-4
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    spreads.append(np.sqrt((k * along**2).sum()))
    assert np.sqrt((k * across**2).sum()) < 0.5
    # A uniform segment of length L has standard deviation L / sqrt(12).
    assert abs(spreads[-1] - length / np.sqrt(12)) < 0.5
  assert spreads == sorted(spreads)


def test_ellipse_is_synthetic_ellipse_matte():
  """`ellipse` against the numpy matte the dynamic scenes of synthetic data cut
  their objects with, given the same draws."""
  from flax_gradnet.data import synthetic  # pylint: disable=g-import-not-at-top
  h = w = 30
  draws = iter([np.array([0.2, 0.3]), 0.4, 0.6, 1.1])

  class Draws:  # stands for the numpy Generator: hands out the values above in order
    def uniform(self, *args, **kwargs):
      return next(draws)

  want = synthetic._ellipse_matte(h, w, Draws())  # pylint: disable=protected-access
  got = dp.ellipse(30, 0.4 * h, 0.6 * w, 0.2 * 30, 0.3 * 30, 1.1)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  m = np.asarray(dp.ellipse_matte(jax.random.PRNGKey(0), 40, 30))
  assert m.shape == (40, 40, 1) and 0 < m.mean() < 1 and m.max() == 1.0


@pytest.mark.parametrize("blur", ["conv", "fft"])
def test_layered_blur_matches_scipy(blur):
  """blurry = (bg * kb)(1 - m * ko) + (t m) * ko and sharp = bg (1 - m) + t m on
  the central crop, with scipy's 'valid' convolutions."""
  rng = np.random.default_rng(4)
  batch, crop, k = 2, 12, 5
  side = crop + k - 1
  bg = rng.uniform(0, 1, (batch, side, side, 3)).astype(np.float32)
  tex = rng.uniform(0, 1, (batch, side, side, 3)).astype(np.float32)
  m = rng.uniform(0, 1, (batch, side, side, 1)).astype(np.float32)
  kb = rng.uniform(0, 1, (batch, k, k)).astype(np.float32)
  ko = rng.uniform(0, 1, (batch, k, k)).astype(np.float32)
  kb /= kb.sum(axis=(1, 2), keepdims=True)
  ko /= ko.sum(axis=(1, 2), keepdims=True)
  blurry, sharp = dp.layered_blur(jnp.asarray(bg), jnp.asarray(tex), jnp.asarray(m),
                                  jnp.asarray(kb), jnp.asarray(ko), blur)

  def valid(x, kern):
    return np.stack([signal.fftconvolve(x[..., c], kern, mode="valid")
                     for c in range(x.shape[-1])], -1)

  o = k // 2
  for b in range(batch):
    front = valid(tex[b] * m[b], ko[b])
    cover = valid(m[b], ko[b])
    np.testing.assert_allclose(np.asarray(blurry[b]), valid(bg[b], kb[b]) * (1 - cover) + front,
                               atol=1e-5)
    inner = (slice(o, o + crop), slice(o, o + crop))
    np.testing.assert_allclose(np.asarray(sharp[b]),
                               bg[b][inner] * (1 - m[b][inner]) + tex[b][inner] * m[b][inner],
                               atol=1e-6)


def test_dynamic_pairs_paste_a_moving_object():
  """p_dynamic = 1 over a still background (p_sharp = 1, no noise): an object
  that does not move (object_motion 0) leaves blurry == sharp, with the object
  in both; one that moves blurs only near itself: the pairs differ on part of
  the crop and agree elsewhere. p_dynamic = 0 draws the earlier pairs."""
  rng = np.random.default_rng(5)
  photos = rng.uniform(0, 1, (3, 40, 40, 3)).astype(np.float32)
  sizes = np.array([[40, 40]] * 3, np.int32)
  psfs = dp.dihedral(dp.shake_pool(2, (2.0, 3.0), 9, seed=0))
  draw = functools.partial(dp.make_pairs, jax.random.PRNGKey(3), jnp.asarray(photos),
                           jnp.asarray(sizes), jnp.asarray(psfs), batch=6, crop=16, noise=0.0,
                           p_sharp=1.0, blur="fft")
  plain_blurry, plain_sharp = draw()
  np.testing.assert_allclose(np.asarray(plain_blurry), np.asarray(plain_sharp), atol=1e-5)
  still_blurry, still_sharp = draw(p_dynamic=1.0, object_motion=(0.0, 0.0))
  np.testing.assert_allclose(np.asarray(still_blurry), np.asarray(still_sharp), atol=1e-5)
  pasted = np.abs(np.asarray(still_sharp) - np.asarray(plain_sharp)).max(axis=-1) > 1e-4
  assert 0.02 < pasted.mean() < 0.9  # the objects cover part of each crop
  moving_blurry, moving_sharp = draw(p_dynamic=1.0, object_motion=(6.0, 8.0))
  np.testing.assert_array_equal(np.asarray(moving_sharp), np.asarray(still_sharp))
  moved = np.abs(np.asarray(moving_blurry) - np.asarray(moving_sharp)).max(axis=-1) > 1e-3
  assert 0.02 < moved.mean() < 0.9
  for a, b in zip(draw(p_dynamic=0.0), (plain_blurry, plain_sharp)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_coarse_pass_adds_its_upsampled_correction_with_its_own_weights():
  """y = G(x) + up(G_c(down x) - down x), clipped: G_c a second net of the same
  fields under "coarse", down the block means of the edge-padded image (numpy
  here), the correction cropped back; the untrained model is the identity;
  `coarse_only` is G_c alone; the stride and memory estimate count the pass."""
  model = Generator(**TINY, coarse_down=4)
  x = np.random.default_rng(0).uniform(-0.9, 0.9, (1, 21, 30, 3)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), x, atol=1e-6)
  params = jax.tree.map(lambda a: a + 0.02 * np.random.default_rng(a.size).standard_normal(a.shape)
                        .astype(np.float32), params)
  full = Generator(**TINY)
  full_params = {k: v for k, v in params.items() if k != "coarse"}
  assert set(full_params) == set(full.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"])
  padded = np.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)), mode="edge")  # to 24 x 32
  small = padded.reshape(1, 6, 4, 8, 4, 3).mean(axis=(2, 4))
  coarse_out = np.asarray(full.apply({"params": params["coarse"]}, small))
  correction = np.asarray(upsample_bilinear(jnp.asarray(coarse_out - small), 4))[:, :21, :30]
  want = np.clip(np.asarray(full.apply({"params": full_params}, x)) + correction, -1, 1)
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, small, coarse_only=True)),
                             coarse_out, atol=1e-6)
  assert inference.model_stride(model) == 16 and inference.model_stride(full) == 4
  assert inference.pass_bytes_per_pixel(model, "off") > inference.pass_bytes_per_pixel(full, "off")
  with pytest.raises(ValueError, match="coarse_down must be"):
    Generator(**TINY, coarse_down=1).init(jax.random.PRNGKey(0), jnp.asarray(x))
  with pytest.raises(ValueError, match="coarse_only=True needs"):
    full.apply({"params": full_params}, x, coarse_only=True)


def _task(**options) -> dp.CoarseTask:
  photos = np.random.default_rng(1).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
  psfs = dp.dihedral(dp.shake_pool(2, (2.0, 3.0), 7, seed=0))
  return dp.CoarseTask(photos=jnp.asarray(photos), sizes=jnp.asarray([[24, 24], [20, 24]]),
                       psfs=jnp.asarray(psfs), batch=2, crop=8, **options)


def test_train_step_adds_the_weighted_coarse_task_and_trains_the_coarse_net_by_it():
  """The generator loss with a coarse task is alpha * the content loss of the
  output plus weight * alpha * the content loss of the coarse net alone on
  `CoarseTask.pairs` of the step's key (reported as "coarse_task"); the pairs
  depend on the step."""
  model = Generator(**TINY, coarse_down=2)
  critic = PatchCritic(features=4, num_layers=1)
  tx = optax.sgd(0.0)  # no update: the losses of one state compared
  state = steps.create_state(jax.random.PRNGKey(0), model, critic, image_size=16,
                             generator_tx=tx, critic_tx=tx)
  state = state.replace(generator=state.generator.replace(params=jax.tree.map(
      lambda a: a + 0.01, state.generator.params)))
  rng = np.random.default_rng(2)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32) for k in ("blur", "sharp")}
  content = jax.tree_util.Partial(losses.pixel_content_loss)
  cfg = steps.StepConfig(content_weight=3.0, gradient_weight=0.0, adversarial_weight=0.0)
  run = jax.jit(functools.partial(steps.train_step, generator_apply=model.apply,
                                  critic_apply=critic.apply, cfg=cfg))
  key = jax.random.PRNGKey(5)
  task = _task(weight=0.5)
  _, metrics = run(state, batch, key, content, task)
  params = state.generator.params
  blurry, sharp = task.pairs(jax.random.fold_in(jax.random.fold_in(key, 0), 2))
  apply = jax.jit(model.apply, static_argnames="coarse_only")
  term = float(losses.pixel_content_loss(apply({"params": params}, blurry, coarse_only=True), sharp))
  without = 3.0 * float(losses.pixel_content_loss(apply({"params": params}, batch["blur"]),
                                                  batch["sharp"]))
  assert term > 0
  np.testing.assert_allclose(float(metrics["generator_coarse_task"]), term, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["generator_loss"]), without + 0.5 * 3.0 * term,
                             rtol=1e-5)
  # The coarse task's gradient reaches the coarse net's weights only.
  grads = jax.jit(jax.grad(lambda p: losses.pixel_content_loss(
      model.apply({"params": p}, blurry, coarse_only=True), sharp)))(params)
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(
      {k: v for k, v in grads.items() if k != "coarse"}))
  assert any(np.asarray(g).any() for g in jax.tree.leaves(grads["coarse"]))
  later = task.pairs(jax.random.fold_in(jax.random.fold_in(key, 1), 2))  # the next step's
  assert not np.allclose(np.asarray(later[1]), np.asarray(sharp))


def test_coarse_warmup_step_trains_the_coarse_net_alone_and_the_rest_starts_fresh_after():
  """`steps.coarse_warmup_step`: the coarse net follows an Adam of its own on
  weight * alpha * its task's loss (pairs of the step's key, as train_step's);
  the rest of the generator, its Adam state (count included) and the critic are
  held, the EMA moves. The first whole step after it then moves the rest as a
  fresh Adam's first step does (|update| = its learning rate), not as an Adam
  whose count ran on during the warm-up."""
  model = Generator(**TINY, coarse_down=2)
  critic = PatchCritic(features=4, num_layers=1)
  lr_coarse, lr_rest, b1, b2 = 1e-2, 3e-3, 0.9, 0.999
  tx = steps.grouped_adam(optax.constant_schedule(lr_coarse), optax.constant_schedule(lr_rest),
                          b1=b1, b2=b2)
  state = steps.create_state(jax.random.PRNGKey(0), model, critic, image_size=16,
                             generator_tx=tx, critic_tx=optax.sgd(0.1))
  state = state.replace(ema_params=state.generator.params)
  params0, critic0 = state.generator.params, state.critic.params
  content = jax.tree_util.Partial(losses.pixel_content_loss)
  cfg = steps.StepConfig(content_weight=3.0, gradient_weight=0.0, adversarial_weight=0.0,
                         ema_decay=0.5)
  task = _task(weight=0.5)
  key = jax.random.PRNGKey(5)
  warm = jax.jit(functools.partial(steps.coarse_warmup_step, generator_apply=model.apply, cfg=cfg))
  metrics = []
  for _ in range(2):
    state, m = warm(state, key, content, task)
    metrics.append(m)
  assert int(state.step) == 2

  # Reference: optax.adam on the coarse net's parameters alone, numpy-side bookkeeping.
  ref_tx = optax.adam(lr_coarse, b1=b1, b2=b2)
  coarse, opt = params0["coarse"], None
  opt = ref_tx.init(coarse)
  for step in range(2):
    blurry, sharp = task.pairs(jax.random.fold_in(jax.random.fold_in(key, step), 2))
    loss = lambda p, b=blurry, s=sharp: 0.5 * 3.0 * losses.pixel_content_loss(
        model.apply({"params": dict(params0, coarse=p)}, b, coarse_only=True), s)
    value, grads = jax.value_and_grad(loss)(coarse)
    np.testing.assert_allclose(float(metrics[step]["generator_loss"]), float(value), rtol=1e-5)
    np.testing.assert_allclose(float(metrics[step]["generator_coarse_task"]),
                               float(value) / 1.5, rtol=1e-5)
    updates, opt = ref_tx.update(grads, opt, coarse)
    coarse = optax.apply_updates(coarse, updates)
  # (Adam divides by the gradient's size: rounding of tiny gradients, jit or not, shows.)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5),
               state.generator.params["coarse"], coarse)
  assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(state.generator.params["coarse"]), jax.tree.leaves(params0["coarse"])))
  rest = {k: v for k, v in state.generator.params.items() if k != "coarse"}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               rest, {k: v for k, v in params0.items() if k != "coarse"})
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state.critic.params, critic0)
  held = state.generator.opt_state.inner_states[steps.REST_GROUP]
  fresh = tx.init(params0).inner_states[steps.REST_GROUP]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), held, fresh)
  # The EMA (decay 0.5) moved towards the coarse net's new weights.
  leaf = lambda t: np.asarray(jax.tree.leaves(t["coarse"])[0])
  assert not np.allclose(leaf(state.ema_params), leaf(params0))

  # The first whole step: the rest's first Adam step, |update| = lr_rest where its gradient
  # is well above Adam's epsilon.
  rng = np.random.default_rng(2)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32) for k in ("blur", "sharp")}
  step = jax.jit(functools.partial(steps.train_step, generator_apply=model.apply,
                                   critic_apply=critic.apply, cfg=cfg))
  after, _ = step(state, batch, key, content, task)
  flat = lambda p: np.concatenate([np.ravel(a) for a in jax.tree.leaves(
      {k: v for k, v in p.items() if k != "coarse"})])
  moved = np.abs(flat(after.generator.params) - flat(state.generator.params))
  big = moved > 0.5 * lr_rest  # (a count run on by 3 would give 0.64 lr_rest)
  assert big.sum() >= 10
  np.testing.assert_allclose(moved[big], lr_rest, rtol=2e-3)
  counts = optax.tree_utils.tree_get_all_with_path(
      after.generator.opt_state.inner_states[steps.REST_GROUP], "count")
  assert counts and all(int(c) == 1 for _, c in counts)


def test_coarse_warmup_step_needs_a_task_and_grouped_adam():
  model = Generator(**TINY, coarse_down=2)
  critic = PatchCritic(features=4, num_layers=1)
  state = steps.create_state(jax.random.PRNGKey(0), model, critic, image_size=16,
                             generator_tx=optax.adam(1e-3), critic_tx=optax.adam(1e-3))
  content = jax.tree_util.Partial(losses.pixel_content_loss)
  run = functools.partial(steps.coarse_warmup_step, state, jax.random.PRNGKey(0), content,
                          generator_apply=model.apply, cfg=steps.StepConfig())
  with pytest.raises(ValueError, match="needs a coarse task"):
    run(None)
  with pytest.raises(ValueError, match="steps.grouped_adam"):
    run(_task(weight=1.0))


def _config(**task):
  config = default.get_config()
  config.model.coarse_down = 4
  config.coarse_task.weight = 1.0
  config.coarse_task.update(task)
  return config


@pytest.mark.parametrize("change, match", [
    (dict(weight=-1.0), "coarse_task.weight must be >= 0"),
    (dict(extent=(5.0, 2.0)), "coarse_task.extent"),
    (dict(p_sharp=1.5), "coarse_task.p_sharp"),
    (dict(blur="wiener"), "coarse_task.blur"),
    (dict(batch=0), "coarse_task.batch"),
    (dict(photo_scales=(0,)), "coarse_task.photo_scales"),
    (dict(p_dynamic=-0.1), "coarse_task.p_dynamic"),
    (dict(p_dynamic=0.3, object_motion=(4.0, 2.0)), "coarse_task.object_motion"),
    (dict(p_dynamic=0.3, object_motion=(2.0, 30.0)), r"high <= kernel_size - 1 = 24"),
    (dict(warmup_steps=-1), "coarse_task.warmup_steps must be an integer >= 0"),
    (dict(warmup_extent=(3.0, 1.0)), "coarse_task.warmup_extent must be"),
])
def test_bad_coarse_task_fields_are_named(change, match):
  with pytest.raises(ValueError, match=match):
    dp.check_coarse_task(_config(**change))


def test_coarse_task_needs_a_coarse_pass_and_a_batch_that_splits_over_the_devices():
  config = _config()
  config.model.coarse_down = 0
  with pytest.raises(ValueError, match="model.coarse_down=0 gives it none"):
    dp.check_coarse_task(config)
  config = _config(batch=6)
  dp.check_coarse_task(config, num_devices=2)
  with pytest.raises(ValueError, match=r"coarse_task.batch=6 must be a multiple of the 4 device"):
    dp.check_coarse_task(config, num_devices=4)
  config = _config()
  config.coarse_task.weight = 0.0
  assert dp.coarse_task_from_config(config) is None


def test_coarse_warmup_must_leave_steps_for_the_whole_generator():
  config = _config(warmup_steps=100)
  config.num_train_steps = 100
  with pytest.raises(ValueError, match=r"warmup_steps=100 leaves none of the run's 100 steps"):
    dp.check_coarse_task(config)
  config.num_train_steps = 101
  dp.check_coarse_task(config)
  assert dp.warmup_steps(config) == 100
  config.coarse_task.weight = 0.0  # the task off: no warm-up
  assert dp.warmup_steps(config) == 0


_TWO_DEVICE_SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from flax_gradnet import losses, steps
    from flax_gradnet.data import device_pairs as dp
    from flax_gradnet.models import Generator
    from flax_gradnet.models.critic import PatchCritic
    assert jax.device_count() == 2
    model = Generator(**%r, coarse_down=2)
    critic = PatchCritic(features=4, num_layers=1)
    tx = optax.sgd(0.1)
    state = steps.create_state(jax.random.PRNGKey(0), model, critic, image_size=16,
                               generator_tx=tx, critic_tx=tx)
    rng = np.random.default_rng(2)
    batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
             for k in ("blur", "sharp")}
    photos = np.random.default_rng(1).uniform(0, 1, (2, 40, 40, 3)).astype(np.float32)
    task = dp.CoarseTask(photos=jnp.asarray(photos), sizes=jnp.asarray([[40, 40], [36, 40]]),
                         psfs=jnp.asarray(dp.dihedral(dp.shake_pool(2, (2.0, 3.0), 7, seed=0))),
                         batch=8, crop=16, weight=0.5)
    content = jax.tree_util.Partial(losses.pixel_content_loss)
    cfg = steps.StepConfig(content_weight=3.0, gradient_weight=0.0, adversarial_weight=0.0)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    results, flops = [], []
    for sharding in (None, data):
      run = jax.jit(functools.partial(steps.train_step, generator_apply=model.apply,
                                      critic_apply=critic.apply, cfg=cfg,
                                      coarse_sharding=sharding),
                    in_shardings=(rep, {"blur": data, "sharp": data}, rep, rep, rep),
                    out_shardings=rep)
      args = (state, batch, jax.random.PRNGKey(5), content, task)
      flops.append(run.lower(*args).compile().cost_analysis()["flops"])
      results.append(run(*args))
    (whole, m1), (split, m2) = results
    assert float(m1["generator_coarse_task"]) > 0
    for k in m1:
      np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=1e-5, err_msg=k)
    for x, y in zip(jax.tree.leaves(split.generator.params),
                    jax.tree.leaves(whole.generator.params)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    # Each device's program does less: the pairs and the coarse net's work are split.
    assert flops[1] < 0.75 * flops[0], flops
    print("OK", flops)
""" % (TINY,))


def test_coarse_task_split_over_two_devices_matches_the_whole_batch_and_does_less_per_device():
  """Under jit over two (forced host) devices, `coarse_sharding` constrains the
  coarse task's pairs to the batch axis: the step's metrics and new weights are
  those of the unconstrained step, and each device's compiled program counts
  fewer FLOPs (XLA's cost analysis of the partitioned program)."""
  import host_devices  # pylint: disable=g-import-not-at-top
  host_devices.run_script(_TWO_DEVICE_SCRIPT, devices=2)


def test_coarse_task_from_config_reads_the_training_photographs(monkeypatch, tmp_path):
  """The built-in training photographs plus photo_dir's, at each scale; the PSF
  pool in its 8 rotations and flips; the settings carried over."""
  from flax_gradnet.data import online  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
  monkeypatch.setattr(online, "training_photographs", lambda: {"a": a})
  monkeypatch.setattr(online, "folder_photographs", lambda path: {"b": b})
  (tmp_path / "photos").mkdir()
  config = _config(photo_scales=(2, 4), crop=8, kernel_size=7, pool=3, extent=(1.0, 2.0),
                   batch=5, blur="fft", p_dynamic=0.5, object_motion=(1.0, 4.0))
  config.dataset_options = ml_collections.ConfigDict({"photo_dir": str(tmp_path / "photos")})
  task = dp.coarse_task_from_config(config)
  np.testing.assert_array_equal(task.sizes, [[32, 48], [16, 24], [40, 40], [20, 20]])
  assert task.psfs.shape == (24, 7, 7)
  assert (task.batch, task.crop, task.blur, task.weight) == (5, 8, "fft", 1.0)
  assert (task.p_dynamic, task.object_motion) == (0.5, (1.0, 4.0))
  blurry, sharp = task.pairs(jax.random.PRNGKey(0))
  assert blurry.shape == sharp.shape == (5, 8, 8, 3)
  assert task.warmup_psfs is None  # no warm-up: no pool of its own
  # A warm-up with its own extent: its pool is the shakes of that extent, its pairs the
  # same crops under them; without warmup_steps the field is inert.
  config.coarse_task.warmup_extent = (2.0, 3.0)
  assert dp.coarse_task_from_config(config).warmup_psfs is None
  config.coarse_task.warmup_steps = 10
  task = dp.coarse_task_from_config(config)
  want = dp.dihedral(dp.shake_pool(3, (2.0, 3.0), 7, 0))
  np.testing.assert_array_equal(task.warmup_psfs, want)
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(task.pairs(key)[0], blurry)
  warm = task.pairs(key, warmup=True)
  np.testing.assert_array_equal(warm[1], sharp)
  np.testing.assert_array_equal(warm[0], dp.make_pairs(
      key, task.photos, task.sizes, want, batch=5, crop=8, noise=task.noise,
      augment=task.augment, p_sharp=task.p_sharp, blur="fft", p_dynamic=0.5,
      object_motion=(1.0, 4.0))[0])
  assert not np.allclose(warm[0], blurry)
