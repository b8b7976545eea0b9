"""Tests of flax_gradnet/models/generator.py: Generator, GradientNet, pixel_shuffle, presets.

Tiny widths (4 channels, one MBRB) wherever the size does not matter; the full
default Generator is only traced abstractly (`jax.eval_shape`), never run.

Most tests fill the parameters with numpy random values of the shapes the
module's init declares (the `random_params` fixture of conftest.py): a real
`init` compiles one threefry kernel per parameter and costs tens of seconds on
a loaded 2-core CPU. The module's own init is exercised where its values matter
(zero_init_output).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_or_skip
from flax_gradnet.models.generator import (
    Generator,
    GeneratorWithoutGradientNet,
    GeneratorWithoutMBRBs,
    GeneratorWithoutRGCL,
    GradientNet,
    pixel_shuffle,
    scale_targets,
)

TINY = dict(base_features=4, gradientnet_features=4, num_mbrbs=1, ca_reduction=4)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, x):
  return model.apply(variables, x)


def _param_shapes(model, x):
  return jax.eval_shape(model.init, jax.random.key(0), x)


def _name(path):
  return "/".join(k.key for k in path)


def _paths(tree):
  """The '/'-joined key paths of every leaf."""
  return [_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, size=shape), jnp.float32)


# --------------------------------------------------------------------------- shapes, range, grads


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 16, 16, 3), (1, 5, 7, 3)])
def test_output_shape_and_range(shape, random_params):
  model = Generator(**TINY)
  x = _images(shape)
  y = _apply(model, random_params(model, x), x)
  assert y.shape == shape and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))
  assert float(jnp.max(jnp.abs(y))) <= 1.0  # Tanh


def test_residual_output_is_clipped_to_unit_range(random_params):
  model = Generator(residual=True, **TINY)
  x = _images((2, 16, 16, 3))
  # Large output-conv weights saturate the Tanh, so input + Tanh would leave [-1, 1].
  variables = random_params(model, x)
  variables["params"]["out_conv"]["conv"]["kernel"] *= 50.0
  y = _apply(model, variables, x)
  assert float(jnp.max(jnp.abs(y))) <= 1.0
  assert float(jnp.max(jnp.abs(y))) == 1.0  # the clip is actually reached


def test_gradients_are_finite_and_reach_every_parameter(random_params):
  # ca_reduction=1: an SE bottleneck of one unit, left dead (ReLU at 0) by the
  # random weights, would cut its excite kernel off; with C units and a positive
  # squeeze bias some unit is alive.
  model = Generator(**{**TINY, "ca_reduction": 1})
  x = _images((1, 12, 20, 3))
  target = _images((1, 12, 20, 3), seed=1)
  variables = random_params(model, x)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.ones_like(a) if _name(path).endswith("squeeze/bias") else a, variables)

  @jax.jit
  def grads(variables, x):
    loss = lambda v, x: jnp.mean((model.apply(v, x) - target) ** 2)
    return jax.grad(loss, argnums=(0, 1))(variables, x)

  g_params, g_x = grads(variables, x)
  leaves = jax.tree_util.tree_leaves_with_path(g_params)
  assert leaves
  for path, g in leaves:
    assert bool(jnp.all(jnp.isfinite(g))), _name(path)
    assert float(jnp.max(jnp.abs(g))) > 0.0, f"no gradient reaches {_name(path)}"
  assert g_x.shape == x.shape and bool(jnp.all(jnp.isfinite(g_x)))
  assert float(jnp.max(jnp.abs(g_x))) > 0.0


# --------------------------------------------------------------------------- structure


def test_full_default_generator_structure():
  # Abstract init only: the default model is never materialised or run.
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  params = _param_shapes(Generator(), x)["params"]
  gn = params["gradientnet"]
  mbrbs = sorted(k for k in gn if k.startswith("mbrb_"))
  assert mbrbs == [f"mbrb_{i}" for i in range(10)]
  for name in mbrbs:
    rgcls = sorted(k for k in gn[name] if k.startswith("rgcl_"))
    assert rgcls == ["rgcl_0", "rgcl_1", "rgcl_2"], name
    for r in rgcls:
      assert gn[name][r]["conv_1x3"]["conv"]["kernel"].shape == (1, 3, 64, 64)
      assert gn[name][r]["conv_3x1"]["conv"]["kernel"].shape == (3, 1, 64, 64)
  paths = _paths(params)
  assert sum(p.endswith("conv_1x3/conv/kernel") for p in paths) == 30
  assert sum(p.endswith("conv_3x1/conv/kernel") for p in paths) == 30
  # Fig. 2 encoder widths: 7x7 conv to 64, two stride-2 convs to 128 and 256.
  assert params["enc_conv0"]["conv"]["kernel"].shape == (7, 7, 3, 64)
  assert params["enc_down1"]["kernel"].shape == (3, 3, 64, 128)
  assert params["enc_down2"]["kernel"].shape == (3, 3, 128, 256)
  assert params["out_conv"]["conv"]["kernel"].shape == (7, 7, 128, 3)
  # GradientNet: PRFTM (Eqs. 2-3) 256 -> 64, MBRU's CA, projection back to 256.
  assert gn["prftm_fe1"]["conv"]["kernel"].shape == (3, 3, 256, 64)
  assert gn["out_proj"]["conv"]["kernel"].shape == (3, 3, 64, 256)
  assert "mbru_ca" in gn
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_gradientnet_residual_is_exact_when_out_proj_is_zero(random_params):
  model = GradientNet(features=4, num_mbrbs=2, ca_reduction=2)
  x = _images((1, 6, 5, 8))
  variables = random_params(model, x)
  out_proj = variables["params"]["out_proj"]["conv"]
  variables["params"]["out_proj"]["conv"] = jax.tree.map(jnp.zeros_like, out_proj)
  np.testing.assert_array_equal(np.asarray(_apply(model, variables, x)), np.asarray(x))
  assert set(variables["params"]) == {"prftm_fe1", "prftm_fe2", "mbrb_0", "mbrb_1", "mbru_ca",
                                      "out_proj"}


# --------------------------------------------------------------------------- ablations (Table 5)


def _check_full(paths):
  assert any("/rgcl_2/" in p for p in paths)


def _check_without_rgcl(paths):
  assert not any("rgcl_" in p for p in paths)
  assert any("/plain_0/" in p for p in paths) and any("/plain_2/" in p for p in paths)


def _check_without_mbrbs(paths):
  assert any("/rgcl_0/" in p for p in paths)
  assert not any("/rgcl_1/" in p or "/rgcl_2/" in p for p in paths)


def _check_without_gradientnet(paths):
  assert not any(p.startswith("gradientnet/") for p in paths)
  assert not any("mbrb_" in p or "rgcl_" in p for p in paths)


@pytest.mark.parametrize("model,check", [
    (Generator(**TINY), _check_full),  # compiled by test_output_shape_and_range already
    (Generator(use_rgcl=False, **TINY), _check_without_rgcl),
    (Generator(num_paths=1, **TINY), _check_without_mbrbs),
    (Generator(use_gradientnet=False, **TINY), _check_without_gradientnet),
    (GeneratorWithoutRGCL(**TINY), _check_without_rgcl),
    (GeneratorWithoutMBRBs(**TINY), _check_without_mbrbs),
    (GeneratorWithoutGradientNet(**TINY), _check_without_gradientnet),
], ids=["full", "use_rgcl=False", "num_paths=1", "use_gradientnet=False",
        "GeneratorWithoutRGCL", "GeneratorWithoutMBRBs", "GeneratorWithoutGradientNet"])
def test_ablation_builds_and_runs(model, check, random_params):
  x = _images((2, 16, 16, 3))
  variables = random_params(model, x)
  check(_paths(variables["params"]))
  y = _apply(model, variables, x)
  assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))


def test_presets_equal_the_field_settings():
  assert GeneratorWithoutRGCL(**TINY) == Generator(use_rgcl=False, **TINY)
  assert GeneratorWithoutMBRBs(**TINY) == Generator(num_paths=1, **TINY)
  assert GeneratorWithoutGradientNet(**TINY) == Generator(use_gradientnet=False, **TINY)


def test_one_ablation_table_feeds_the_configs_and_the_cost_report():
  from configs import ablations as config_ablations
  from flax_gradnet import cost
  from flax_gradnet.models import GENERATOR_ABLATIONS, reference
  assert list(GENERATOR_ABLATIONS) == ["wo_rgcl", "wo_rgcl_kernels", "wo_mbrbs", "wo_gradientnet"]
  for name, ablation in GENERATOR_ABLATIONS.items():
    assert config_ablations.ABLATIONS[name] == {f"model.{k}": v for k, v in ablation.fields.items()}
    model_config = config_ablations.get_config(name).model
    assert all(model_config[k] == v for k, v in ablation.fields.items())
    assert cost.VARIANTS[ablation.label] == dict(ablation.fields)
  assert list(config_ablations.ABLATIONS) == ["wo_content", "wo_gradient", *GENERATOR_ABLATIONS]
  assert list(cost.VARIANTS) == ["default", *(a.label for a in GENERATOR_ABLATIONS.values()),
                                    "pixel-shuffle upsampling"]
  assert reference.GeneratorWithoutMBRBs(**TINY) == reference.Generator(num_paths=1, **TINY)


# --------------------------------------------------------------------------- options


def test_bfloat16_compute_keeps_float32_params(random_params):
  model = Generator(dtype=jnp.bfloat16, **TINY)
  x = _images((2, 16, 16, 3))
  variables = random_params(model, x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  y = _apply(model, variables, x)
  assert y.dtype == jnp.bfloat16 and y.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(y)))
  # Same weights in float32: bf16 only loses precision.
  y32 = _apply(Generator(**TINY), variables, x)
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y32), atol=0.1)


@pytest.mark.parametrize("upsample", ["transpose", "pixel_shuffle"])
def test_upsample_modes(upsample, random_params):
  model = Generator(upsample=upsample, **TINY)
  x = _images((2, 16, 16, 3))
  variables = random_params(model, x)
  dec_up1 = variables["params"]["dec_up1"]
  if upsample == "transpose":  # 3x3 stride-2 transposed conv, 16 -> 8 channels
    assert dec_up1["kernel"].shape == (3, 3, 16, 8)
  else:  # 3x3 conv to 4 x 8 channels, then depth-to-space
    assert dec_up1["conv"]["kernel"].shape == (3, 3, 16, 32)
  y = _apply(model, variables, x)
  assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))


def test_zero_init_output_with_residual_is_identity():
  model = Generator(residual=True, zero_init_output=True, **TINY)
  x = np.random.default_rng(0).uniform(-1, 1, size=(1, 8, 12, 3)).astype(np.float32)
  x[0, 0, :3, 0] = [-1.0, 0.0, 1.0]  # the ends of the range too
  # The module's own init ("rbg" keys: threefry's init compiles slowly on CPU).
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  assert not np.any(np.asarray(variables["params"]["out_conv"]["conv"]["kernel"]))
  np.testing.assert_array_equal(np.asarray(_apply(model, variables, x)), x)


def test_norm_none_runs_and_has_no_norm_params(random_params):
  model = Generator(norm="none", **TINY)
  x = _images((2, 16, 16, 3))
  variables = random_params(model, x)
  p = variables["params"]
  assert not any("norm" in k for k in p)
  assert "bias" in p["enc_down1"]  # convs get a bias when no norm follows them
  y = _apply(model, variables, x)
  assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
  with_norm = _param_shapes(Generator(**TINY), x)["params"]
  assert "enc_norm0" in with_norm and "bias" not in with_norm["enc_down1"]


# --------------------------------------------------------------------------- coarse to fine


def _np_area_down(x, f):
  n, h, w, c = x.shape
  return x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))


def _np_bilinear_x2(x):
  """Half-pixel-centre bilinear x2 with edge clamping, in numpy (an independent reference):
  output pixel i reads input coordinate (i + 0.5) / 2 - 0.5."""
  def axis_weights(size):
    pos = (np.arange(2 * size) + 0.5) / 2 - 0.5
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    m = np.zeros((2 * size, size))
    for i, (a, t) in enumerate(zip(lo, frac)):
      m[i, np.clip(a, 0, size - 1)] += 1 - t
      m[i, np.clip(a + 1, 0, size - 1)] += t
    return m
  mh, mw = axis_weights(x.shape[1]), axis_weights(x.shape[2])
  return np.einsum("ih,nhwc,jw->nijc", mh, x, mw)


def test_coarse_to_fine_passes_equal_single_scale_passes_composed(random_params):
  """scales=3 shares the single-scale net's parameters (same tree) and computes
  its pass at 1/4, then at 1/2 and 1/1 on the blurry image plus the upsampled
  correction of the pass below (numpy area means and bilinear upsampling)."""
  single = Generator(residual=True, num_levels=2, **TINY)
  multi = single.clone(scales=3)
  x = _images((2, 24, 40, 3))
  variables = random_params(single, x)
  assert _paths(_param_shapes(multi, x)) == _paths(variables)
  xn = np.asarray(x, np.float64)
  prev, passes = None, []
  for f in (4, 2, 1):
    xs = _np_area_down(xn, f)
    if prev is not None:
      xs = np.clip(xs + _np_bilinear_x2(prev[1] - prev[0]), -1, 1)
    prev = (xs, np.asarray(_apply(single, variables, jnp.asarray(xs, jnp.float32)), np.float64))
    passes.append(prev[1])
  np.testing.assert_allclose(np.asarray(_apply(multi, variables, x)), prev[1], atol=2e-5)
  # all_scales=True: every pass's output, coarse to fine (what the multi-scale loss reads).
  every = jax.jit(functools.partial(multi.apply, all_scales=True))(variables, x)
  assert [o.shape for o in every] == [(2, 6, 10, 3), (2, 12, 20, 3), (2, 24, 40, 3)]
  for got, want in zip(every, passes):
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
  one = jax.jit(functools.partial(single.apply, all_scales=True))(variables, x)
  assert isinstance(one, tuple) and len(one) == 1
  np.testing.assert_allclose(np.asarray(one[0]), np.asarray(_apply(single, variables, x)),
                             atol=1e-6)


def test_scale_targets_pad_then_area_average():
  """The pyramid every pass reads (and the multi-scale loss's targets): reflect-padded
  to a multiple of 2**(scales-1), then block means, coarse to fine (numpy)."""
  x = _images((1, 13, 22, 3))
  pyramid = scale_targets(x, 3)
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
  assert [p.shape for p in pyramid] == [(1, 4, 6, 3), (1, 8, 12, 3), (1, 16, 24, 3)]
  for p, f in zip(pyramid, (4, 2, 1)):
    np.testing.assert_allclose(np.asarray(p), _np_area_down(padded, f), atol=1e-6)
  assert len(scale_targets(x, 1)) == 1 and scale_targets(x, 1)[0].shape == x.shape


def test_coarse_to_fine_pads_odd_sizes_and_starts_as_the_identity():
  model = Generator(residual=True, zero_init_output=True, scales=3, **TINY)
  x = _images((1, 13, 22, 3))
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
  np.testing.assert_allclose(np.asarray(_apply(model, variables, x)), np.asarray(x), atol=1e-6)


@pytest.mark.parametrize("kwargs,shape,field", [
    (dict(norm="batch"), (1, 8, 8, 3), "norm"),
    (dict(upsample="bilinear"), (1, 8, 8, 3), "upsample"),
    (dict(padding_mode="circular"), (1, 8, 8, 3), "padding_mode"),
    (dict(), (1, 8, 8, 2), "3 channels"),
    (dict(), (8, 8, 3), "NHWC"),
    (dict(scales=0), (1, 8, 8, 3), "scales"),
    (dict(scales=2, stats_window=8), (1, 8, 8, 3), "local statistics"),
])
def test_bad_values_raise(kwargs, shape, field):
  with pytest.raises(ValueError, match=field):
    _param_shapes(Generator(**{**TINY, **kwargs}), jnp.zeros(shape))


# --------------------------------------------------------------------------- compilation


def test_jitted_forward_traces_once_per_shape(random_params):
  model = Generator(**TINY)
  x = _images((1, 8, 8, 3))
  variables = random_params(model, x)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(variables, x):
    return model.apply(variables, x)

  for seed in range(3):  # new values, same shapes: no retrace
    v = jax.tree.map(lambda a: a * (1.0 + seed), variables)
    forward(v, _images((1, 8, 8, 3), seed=seed)).block_until_ready()
  with pytest.raises(AssertionError):  # the counter does count: a new shape retraces
    forward(variables, _images((1, 12, 8, 3)))


# --------------------------------------------------------------------------- pixel_shuffle


@pytest.mark.parametrize("factor,shape", [(2, (2, 3, 5, 12)), (3, (1, 4, 2, 18))])
def test_pixel_shuffle_matches_torch(factor, shape):
  torch = import_or_skip("torch")
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  y = jax.jit(pixel_shuffle, static_argnums=1)(x, factor)
  ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), factor)
  ref = ref.permute(0, 2, 3, 1).numpy()
  n, h, w, c = shape
  assert y.shape == (n, h * factor, w * factor, c // factor**2)
  np.testing.assert_array_equal(np.asarray(y), ref)
