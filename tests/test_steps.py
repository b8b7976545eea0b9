"""Tests of the pure train step: update counts, devices, warm-up, finiteness."""

import functools
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flax_gradnet import losses, steps
from flax_gradnet.models import Generator, PatchCritic

# tests/tiny_config.py's generator: two RGCL paths of two recurrences (still a
# concatenation and a recurrence) compile a quarter faster than the paper's 3 and 3.
TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4, num_paths=2,
            num_recurrences=2)


def _setup(critic_steps=5, **cfg_kw):
  generator = Generator(**TINY)
  critic = PatchCritic(features=4, num_layers=2)
  tx = optax.adam(1e-3, b1=0.5, b2=0.999)
  state = steps.create_state(jax.random.PRNGKey(0), generator, critic, image_size=32,
                             generator_tx=tx, critic_tx=tx)
  cfg = steps.StepConfig(critic_steps=critic_steps, **cfg_kw)
  fn = functools.partial(steps.train_step, generator_apply=generator.apply,
                         critic_apply=critic.apply, content_fn=losses.pixel_content_loss,
                         cfg=cfg, axis_name=None)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
           for k in ("blur", "sharp")}
  return state, fn, batch


def test_five_critic_updates_per_generator_update():
  state, fn, batch = _setup()
  step = jax.jit(fn)
  for expected in (1, 2):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
    assert int(state.generator.step) == expected
    assert int(state.critic.step) == 5 * expected
    # Adam's own counter agrees: it was asked for 5 updates per step.
    assert int(state.critic.opt_state[0].count) == 5 * expected
  for name in ("critic_loss", "gradient_penalty", "wasserstein", "generator_content",
               "generator_gradient", "generator_adversarial", "generator_grad_norm",
               "critic_grad_norm", "generator_param_norm", "critic_param_norm"):
    assert np.isfinite(float(metrics[name])), name
  assert float(metrics["params_finite"]) == 1.0
  assert float(metrics["gradient_penalty"]) >= 0.0


def test_unrolled_and_rolled_critic_loops_agree():
  state, fn, batch = _setup()
  state2 = jax.tree_util.tree_map(jnp.copy, state)
  rolled = functools.partial(fn, cfg=steps.StepConfig(critic_unroll=False))
  a, ma = jax.jit(fn)(state, batch, jax.random.PRNGKey(3))
  b, mb = jax.jit(rolled)(state2, batch, jax.random.PRNGKey(3))
  np.testing.assert_allclose(float(ma["critic_loss"]), float(mb["critic_loss"]), rtol=1e-4)
  for x, y in zip(jax.tree_util.tree_leaves(a.critic.params),
                  jax.tree_util.tree_leaves(b.critic.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_fresh_critic_batches_equal_same_when_every_batch_is_the_generators():
  """critic_batches="fresh" makes update k's fakes from its own blurry batch
  with the generator of this step: given k copies of the generator's batch
  it must compute exactly what "same" computes (k = 5: the "same" step is the
  one test_five_critic_updates_per_generator_update compiled)."""
  state, fn, batch = _setup(critic_steps=5)
  same, m_same = jax.jit(fn)(state, batch, jax.random.PRNGKey(1))
  copies = dict(batch, critic_blur=jnp.stack([batch["blur"]] * 5),
                critic_sharp=jnp.stack([batch["sharp"]] * 5))
  fresh, m_fresh = jax.jit(fn)(state, copies, jax.random.PRNGKey(1))
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(fresh), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(m_same["critic_loss"], m_fresh["critic_loss"])


def test_fresh_critic_batches_are_read_by_the_critic_updates():
  state, fn, batch = _setup(critic_steps=5)  # the steps the test above compiled
  rng = np.random.default_rng(5)
  other = {f"critic_{k}": jnp.asarray(rng.uniform(-1, 1, (5, 2, 32, 32, 3)), jnp.float32)
           for k in ("blur", "sharp")}
  same, _ = jax.jit(fn)(state, batch, jax.random.PRNGKey(1))
  fresh, _ = jax.jit(fn)(state, dict(batch, **other), jax.random.PRNGKey(1))
  assert int(fresh.critic.step) == 5
  diff = [float(jnp.max(jnp.abs(a - b))) for a, b in
          zip(jax.tree.leaves(same.critic.params), jax.tree.leaves(fresh.critic.params))]
  assert max(diff) > 1e-6
  with pytest.raises(ValueError, match="4 batches for 5 critic updates"):
    jax.jit(fn)(state, dict(batch, critic_blur=other["critic_blur"][:4],
                            critic_sharp=other["critic_sharp"][:4]), jax.random.PRNGKey(1))


def test_bfloat16_train_steps_stay_finite_and_close_to_float32():
  """compute_dtype=bfloat16 (params float32): 3 full WGAN-GP steps on CPU stay
  finite and close to float32. Stated tolerance: every loss within 0.5% of
  float32's at every step; the generator's total parameter change points the
  same way (cosine > 0.9, relative L2 difference < 0.5; Adam moves
  parameters with tiny gradients by about the learning rate whatever their
  sign, so elementwise closeness is not expected). Seen: losses within
  0.04%, cosine 0.98, relative L2 0.22."""
  tx = optax.adam(1e-3, b1=0.5, b2=0.999)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
           for k in ("blur", "sharp")}
  changes, history = [], []
  for dtype in (jnp.float32, jnp.bfloat16):
    g = Generator(dtype=dtype, **TINY)
    c = PatchCritic(features=4, num_layers=2, dtype=dtype)
    state = steps.create_state(jax.random.PRNGKey(0), g, c, image_size=32,
                               generator_tx=tx, critic_tx=tx)
    init = state.generator.params
    step = jax.jit(functools.partial(
        steps.train_step, generator_apply=g.apply, critic_apply=c.apply,
        content_fn=losses.pixel_content_loss, cfg=steps.StepConfig(critic_steps=2)))
    losses_seen = []
    for _ in range(3):
      state, m = step(state, batch, jax.random.PRNGKey(1))
      assert float(m["params_finite"]) == 1.0
      assert all(np.isfinite(float(v)) for v in m.values())
      losses_seen.append([float(m[k]) for k in ("generator_loss", "critic_loss",
                                                  "gradient_penalty", "generator_content")])
    history.append(np.asarray(losses_seen))
    changes.append(np.concatenate([(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
        jax.tree.leaves(state.generator.params), jax.tree.leaves(init))]))
  np.testing.assert_allclose(history[1], history[0], rtol=5e-3)
  d32, d16 = changes
  assert d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32)) > 0.9
  assert np.linalg.norm(d16 - d32) / np.linalg.norm(d32) < 0.5


def test_bfloat16_residual_stream_is_float32(random_params):
  from flax_gradnet.models.generator import GradientNet  # pylint: disable=g-import-not-at-top
  from flax_gradnet.models.layers import MBRB, RGCL  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 8, 4)), jnp.float32)
  for module in (RGCL(ca_reduction=2, dtype=jnp.bfloat16), MBRB(ca_reduction=2, dtype=jnp.bfloat16),
                 GradientNet(features=4, num_mbrbs=2, ca_reduction=2, dtype=jnp.bfloat16)):
    y = module.apply(random_params(module, x), x)
    assert y.dtype == jnp.float32, type(module).__name__
  # An input that bf16 cannot hold passes through the residual exactly when the
  # branch adds nothing (fe4 = 0): a bf16 stream would round it.
  mbrb = MBRB(ca_reduction=2, dtype=jnp.bfloat16)
  v = random_params(mbrb, x)
  v["params"]["fe4"] = jax.tree.map(jnp.zeros_like, v["params"]["fe4"])
  x_fine = x + 1e-4
  np.testing.assert_array_equal(np.asarray(mbrb.apply(v, x_fine)), np.asarray(x_fine))


def test_warmup_step_leaves_critic_alone():
  state, fn, batch = _setup()
  new, metrics = jax.jit(functools.partial(fn, adversarial=False))(
      state, batch, jax.random.PRNGKey(1))
  assert int(new.critic.step) == 0 and int(new.generator.step) == 1
  assert float(metrics["generator_adversarial"]) == 0.0
  assert "critic_loss" not in metrics
  # The generator loss is then exactly 10 * MSE + gradient loss (Eq. 11 with gamma = 0).
  pred = jax.jit(Generator(**TINY).apply)({"params": state.generator.params}, batch["blur"])
  expected = 10 * np.mean((np.asarray(pred) - np.asarray(batch["sharp"]))**2) + float(
      losses.gradient_loss(pred, batch["sharp"]))
  np.testing.assert_allclose(float(metrics["generator_loss"]), expected, rtol=1e-5)


def test_nonfinite_input_is_flagged():
  state, fn, batch = _setup()
  batch["blur"] = batch["blur"].at[0, 0, 0, 0].set(jnp.nan)
  _, metrics = jax.jit(fn)(state, batch, jax.random.PRNGKey(1))
  assert float(metrics["params_finite"]) == 0.0
  assert not np.isfinite(float(metrics["generator_loss"]))


def test_missing_vgg_weights_message(tmp_path):
  config = ml_collections.ConfigDict({"content_loss": "vgg",
                                      "vgg_weights": str(tmp_path / "nope.npz"),
                                      "vgg_layer": "relu4_3"})
  with pytest.raises(FileNotFoundError, match="convert_vgg19"):
    steps.make_content_fn(config)
  config.content_loss = "perceptual"
  with pytest.raises(ValueError, match="content_loss"):
    steps.make_content_fn(config)


def _rand_images(seed):
  return np.random.default_rng(seed).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)


def test_stand_in_content_losses_need_no_weights():
  pred, target = _rand_images(0), _rand_images(1)
  for name, fn in (("pixel", losses.pixel_content_loss), ("psnr", losses.psnr_content_loss)):
    config = ml_collections.ConfigDict({"content_loss": name, "vgg_weights": "/nonexistent.npz",
                                        "vgg_layer": "relu4_3"})
    assert steps.check_content_loss(config) is None
    np.testing.assert_allclose(steps.make_content_fn(config)(pred, target), fn(pred, target))
  config.psnr_loss_floor = 1e-3
  np.testing.assert_allclose(steps.make_content_fn(config)(pred, target),
                             losses.psnr_content_loss(pred, target, floor=1e-3))
  config.psnr_loss_floor = 0.0
  with pytest.raises(ValueError, match="psnr_loss_floor"):
    steps.check_content_loss(config)  # what config_checks.preflight runs before writing anything
  with pytest.raises(ValueError, match="psnr_loss_floor"):
    steps.make_content_fn(config)


_TWO_DEVICE_SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from flax_gradnet import losses, steps
    from flax_gradnet.models import Generator, PatchCritic
    assert jax.device_count() == 2, jax.devices()
    g = Generator(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4,
                  num_paths=2, num_recurrences=2)  # test_steps.TINY
    c = PatchCritic(features=4, num_layers=2)
    tx = optax.adam(1e-3, b1=0.5, b2=0.999)
    state0 = steps.create_state(jax.random.PRNGKey(0), g, c, image_size=32,
                                generator_tx=tx, critic_tx=tx)
    fn = functools.partial(steps.train_step, generator_apply=g.apply, critic_apply=c.apply,
                           content_fn=losses.pixel_content_loss, cfg=steps.StepConfig(),
                           axis_name=None)
    rng = np.random.default_rng(0)
    batches = [{k: rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
                for k in ("blur", "sharp")} for _ in range(2)]

    def run(devices):
      # train.py's layout: batch split over a 1-D "data" mesh, the rest replicated.
      mesh = Mesh(np.asarray(devices), ("data",))
      rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
      step = jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=rep)
      state = jax.device_put(state0, rep)
      for batch in batches:
        state, m = step(state, jax.device_put(batch, data), jax.device_put(jax.random.PRNGKey(7), rep))
      return state, m

    two, m2 = run(jax.devices())
    one, m1 = run(jax.devices()[:1])
    leaves2 = jax.tree_util.tree_leaves((two.generator.params, two.critic.params))
    leaves1 = jax.tree_util.tree_leaves((one.generator.params, one.critic.params))
    for x in leaves2:  # replicated: every device holds the same parameters
      shards = [np.asarray(s.data) for s in x.addressable_shards]
      assert len(shards) == 2
      np.testing.assert_array_equal(shards[0], shards[1])
    for x, y in zip(leaves2, leaves1):  # the same global batch, split or not
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    assert int(two.critic.step) == 10
    np.testing.assert_allclose(float(m2["critic_loss"]), float(m1["critic_loss"]), rtol=1e-4)
    print("OK", len(leaves2))
""")


def test_two_devices_equal_one_device_on_the_same_global_batch():
  import host_devices  # pylint: disable=g-import-not-at-top
  host_devices.run_script(_TWO_DEVICE_SCRIPT, devices=2)


def test_vgg_content_loss_runs_in_the_step_with_weights_as_arguments(tmp_path):
  from flax_gradnet import vgg  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  arrays = {"meta.format": np.asarray(vgg.FILE_FORMAT)}
  for conv in vgg.convs_up_to("relu1_2"):
    cin, cout = vgg.CONV_IN_CHANNELS[conv], vgg.CONV_WIDTH[conv]
    arrays[f"{conv}.kernel"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(
        np.float32)
    arrays[f"{conv}.bias"] = np.zeros(cout, np.float32)
  path = str(tmp_path / "vgg_tiny.npz")
  np.savez(path, **arrays)
  config = ml_collections.ConfigDict({"content_loss": "vgg", "vgg_weights": path,
                                      "vgg_layer": "relu1_2"})
  content_fn = steps.make_content_fn(config)
  # The weights are the Partial's leaves: passed to the jitted step as arguments.
  assert len(jax.tree_util.tree_leaves(content_fn)) == 4
  state, _, batch = _setup()
  step = jax.jit(functools.partial(
      steps.train_step, generator_apply=Generator(**TINY).apply,
      critic_apply=PatchCritic(features=4, num_layers=2).apply, cfg=steps.StepConfig(),
      adversarial=False, axis_name=None))
  pred = jax.jit(Generator(**TINY).apply)({"params": state.generator.params}, batch["blur"])
  feats = vgg.make_feature_fn(vgg.load_params(path), layer="relu1_2")
  expected = float(np.mean((np.asarray(feats(pred)) - np.asarray(feats(batch["sharp"])))**2))
  _, metrics = step(state, batch, jax.random.PRNGKey(0), content_fn)
  np.testing.assert_allclose(float(metrics["generator_content"]), expected, rtol=1e-4)
  assert expected > 0


def test_reinitialize_schemes_match_their_definitions():
  params = {"conv": {"kernel": jnp.ones((3, 3, 16, 32)), "bias": jnp.zeros((32,))},
            "zero_out": {"kernel": jnp.zeros((3, 3, 32, 3)), "bias": jnp.zeros((3,))},
            "norm": {"scale": jnp.ones((32,)), "bias": jnp.zeros((32,))},
            "dense": {"kernel": jnp.ones((64, 8)), "bias": jnp.zeros((8,))}}
  rng = jax.random.PRNGKey(0)
  assert steps.reinitialize(params, "lecun_normal", rng) is params
  torch_like = steps.reinitialize(params, "torch", rng)
  for name, fan_in in (("conv", 3 * 3 * 16), ("dense", 64)):
    bound = 1 / np.sqrt(fan_in)
    k, b = np.asarray(torch_like[name]["kernel"]), np.asarray(torch_like[name]["bias"])
    assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has variance a^2 / 3: PyTorch's kaiming_uniform(a=sqrt(5)).
    np.testing.assert_allclose(k.var(), bound ** 2 / 3, rtol=0.1)
    assert np.abs(b).max() > 0
  for leaf in ("kernel", "bias"):  # a zero-initialised output conv stays zero
    np.testing.assert_array_equal(torch_like["zero_out"][leaf], 0.0)
  np.testing.assert_array_equal(torch_like["norm"]["scale"], 1.0)
  normal = steps.reinitialize(params, "normal_0.02", rng)
  np.testing.assert_allclose(np.asarray(normal["conv"]["kernel"]).std(), 0.02, rtol=0.1)
  np.testing.assert_array_equal(normal["conv"]["bias"], 0.0)
  with pytest.raises(ValueError, match="init_scheme"):
    steps.reinitialize(params, "xavier", rng)


def test_instance_norm_fields_follow_pytorch_in_the_paper_config():
  from conftest import import_or_skip, load_config_file  # pylint: disable=g-import-not-at-top
  torch = import_or_skip("torch")
  from flax_gradnet.models import generator_from_config  # pylint: disable=g-import-not-at-top
  config = load_config_file("default")
  with config.unlocked():
    for k, v in TINY.items():
      config.model[k] = v
  model = generator_from_config(config)
  assert (model.norm_affine, model.norm_epsilon) == (False, 1e-5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 16, 3)), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  assert not any("norm" in "/".join(map(str, p)) for p in
                 traverse_paths(params)), "InstanceNorm without affine has no parameters"
  # flax's InstanceNorm with these fields is torch.nn.InstanceNorm2d's default.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  y = np.random.default_rng(1).normal(size=(2, 5, 7, 4)).astype(np.float32) * 3 + 1
  ours = nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False).apply({}, y)
  ref = torch.nn.InstanceNorm2d(4)(torch.from_numpy(y).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-5)
  # A config.json written before the fields existed gets flax's values back.
  del config.model["norm_affine"], config.model["norm_epsilon"]
  old = generator_from_config(config)
  assert (old.norm_affine, old.norm_epsilon) == (True, 1e-6)


def traverse_paths(tree):
  return [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _step_config_from(**fields):
  """StepConfig.from_config of an ml_collections config without the GAN term."""
  return steps.StepConfig.from_config(ml_collections.ConfigDict(dict(
      critic_steps=5, gp_weight=10.0, adversarial_weight=0.0, critic_unroll=True, **fields)))


def _generator_only_step(generator_apply, cfg):
  """The jitted step without the critic, pixel MSE content."""
  return jax.jit(functools.partial(
      steps.train_step, generator_apply=generator_apply,
      critic_apply=PatchCritic(features=4, num_layers=2).apply, cfg=cfg,
      content_fn=losses.pixel_content_loss, adversarial=False, axis_name=None))


def test_loss_low_freq_sigma_makes_the_losses_read_the_output_with_the_inputs_low_frequencies():
  cfg = _step_config_from(content_weight=1.0, gradient_weight=1.0, loss_low_freq_sigma=3.0)
  assert cfg.loss_low_freq_sigma == 3.0
  state, _, batch = _setup()
  step = _generator_only_step(Generator(**TINY).apply, cfg)
  pred = np.asarray(jax.jit(Generator(**TINY).apply)({"params": state.generator.params},
                                                     batch["blur"]),
                    np.float64)
  # The reference: scipy's reflect Gaussian, as inference.keep_input_low_frequencies uses.
  ndimage = pytest.importorskip("scipy.ndimage")
  blur = np.asarray(batch["blur"], np.float64)
  low = np.stack([ndimage.gaussian_filter(p - b, (3.0, 3.0, 0), mode="reflect", truncate=4.0)
                  for p, b in zip(pred, blur)])
  kept, sharp = pred - low, np.asarray(batch["sharp"], np.float64)
  _, metrics = step(state, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(float(metrics["generator_content"]), np.mean((kept - sharp) ** 2),
                             rtol=1e-4)
  grad = (np.abs(np.diff(kept, axis=2) - np.diff(sharp, axis=2)).mean()
          + np.abs(np.diff(kept, axis=1) - np.diff(sharp, axis=1)).mean())
  np.testing.assert_allclose(float(metrics["generator_gradient"]), grad, rtol=1e-4)
  assert abs(np.mean((kept - sharp) ** 2) - np.mean((pred - sharp) ** 2)) > 1e-4  # it acts


def test_scale_loss_weight_adds_each_coarse_pass_against_the_sharp_image_at_its_scale():
  """The multi-scale loss: with model.scales=3 each coarse pass's content loss
  (pixel MSE here) against the area-averaged sharp image, summed, times the
  weight and content_weight, is added; recomputed in numpy from the passes."""
  cfg = _step_config_from(content_weight=2.0, gradient_weight=0.0, scale_loss_weight=0.5)
  assert cfg.scale_loss_weight == 0.5
  state, _, batch = _setup()
  multi = Generator(**TINY, scales=3)  # the same parameter tree as the single-scale net
  step = _generator_only_step(multi.apply, cfg)
  passes = jax.jit(functools.partial(multi.apply, all_scales=True))(
      {"params": state.generator.params}, batch["blur"])
  sharp = np.asarray(batch["sharp"], np.float64)

  def down(x, f):
    n, h, w, c = x.shape
    return x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))

  coarse = sum(np.mean((np.asarray(p, np.float64) - down(sharp, f)) ** 2)
               for p, f in zip(passes[:2], (4, 2)))
  final = np.mean((np.asarray(passes[2], np.float64) - sharp) ** 2)
  _, metrics = step(state, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(float(metrics["generator_scale_content"]), coarse, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["generator_content"]), final, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["generator_loss"]), 2.0 * (final + 0.5 * coarse),
                             rtol=1e-4)
  # The coarse passes' own gradient reaches the weights: weight 0 gives another update.
  off = _generator_only_step(multi.apply, steps.StepConfig(
      content_weight=2.0, gradient_weight=0.0, adversarial_weight=0.0))
  _, off_metrics = off(state, batch, jax.random.PRNGKey(0))
  assert "generator_scale_content" not in off_metrics
  assert abs(float(off_metrics["generator_grad_norm"]) - float(metrics["generator_grad_norm"])) > 1e-6
