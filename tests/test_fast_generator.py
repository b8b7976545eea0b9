"""The CPU-optimised modules compute the reference modules' function, with their
parameter tree.

The reference is flax_gradnet/models/reference.py: a frozen copy of the
straightforward implementation (a reflect-padded copy before every conv, the
1x3 and 3x1 gradient convolutions applied separately). Every check runs on
random weights (conftest.random_params), in float32, to 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config_file
from flax_gradnet.models import generator as fast_generator
from flax_gradnet.models import layers as fast_layers
from flax_gradnet.models import reference as ref

ATOL = 1e-5


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def assert_same_tree(a, b):
  paths_a = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(a)]
  paths_b = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(b)]
  assert paths_a == paths_b
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype


@pytest.mark.parametrize("kernel_size", [(1, 3), (3, 1), (3, 3), (7, 7), (1, 1), (5, 3), (2, 4)])
@pytest.mark.parametrize("hw", [(9, 11), (4, 5), (2, 3), (1, 1), (7, 2)])
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_conv2d_same_equals_pad_then_valid(kernel_size, hw, mode):
  """Exact border strips for images larger than the kernel, the padded copy otherwise."""
  x = _inputs((2, *hw, 4))
  kernel = _inputs((*kernel_size, 4, 5), seed=1)
  got = fast_layers.conv2d_same(x, kernel, mode)
  want = jax.lax.conv_general_dilated(ref.pad_same(x, kernel_size, mode), kernel, (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL, rtol=0)


def test_conv2d_same_rejects_unknown_padding():
  with pytest.raises(ValueError, match="padding_mode"):
    fast_layers.conv2d_same(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), "circular")


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("module_name, kwargs", [
    ("PaddedConv", dict(features=6, kernel_size=(7, 7))),
    ("PaddedConv", dict(features=6, kernel_size=(1, 3), use_bias=False)),
    ("RGCL", dict(ca_reduction=2)),
    ("RGCL", dict(ca_reduction=2, num_recurrences=1, conv_kernel=(5, 5))),
    ("RGCL", dict(ca_reduction=2, kernels="square")),
    ("MBRB", dict(ca_reduction=2)),
    ("MBRB", dict(ca_reduction=2, use_rgcl=False)),
    ("MBRB", dict(ca_reduction=2, num_paths=1)),
    ("MBRB", dict(ca_reduction=2, rgcl_kernels="square")),
])
def test_layers_equal_the_reference(module_name, kwargs, mode, random_params):
  x = _inputs((2, 13, 10, 6))
  fast = getattr(fast_layers, module_name)(padding_mode=mode, **kwargs)
  slow = getattr(ref, module_name)(padding_mode=mode, **kwargs)
  assert_same_tree(fast.init(jax.random.key(0), x), slow.init(jax.random.key(0), x))
  variables = random_params(slow, x)
  np.testing.assert_allclose(np.asarray(fast.apply(variables, x)),
                             np.asarray(slow.apply(variables, x)), atol=ATOL, rtol=0)


def test_initial_weights_are_unchanged():
  """Same init values as before (the parameter rng follows the module path)."""
  x = _inputs((1, 12, 12, 4))
  fast = fast_layers.RGCL(ca_reduction=2).init(jax.random.key(3), x)
  slow = ref.RGCL(ca_reduction=2).init(jax.random.key(3), x)
  for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(slow)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


SMALL = dict(base_features=4, gradientnet_features=8, num_mbrbs=2, ca_reduction=4)
GENERATOR_CASES = [
    dict(SMALL),
    dict(SMALL, padding_mode="zeros"),
    dict(SMALL, upsample="pixel_shuffle"),
    dict(SMALL, norm="none", residual=True, upsample="pixel_shuffle", padding_mode="zeros"),
    dict(SMALL, use_rgcl=False),  # Table 5 ablations
    dict(SMALL, num_paths=1),
    dict(SMALL, use_gradientnet=False),
    dict(SMALL, rgcl_kernels="square"),  # the narrower "w/o RGCL" (configs/ablations.py)
    dict(SMALL, num_levels=3),  # a third stride-2 stage
    dict(SMALL, num_levels=3, norm="none", residual=True, upsample="pixel_shuffle",
         padding_mode="zeros"),
    dict(SMALL, num_levels=1),
]


@pytest.mark.parametrize("fields, hw", [(f, (33, 47)) for f in GENERATOR_CASES]
                         + [(GENERATOR_CASES[0], (20, 16)), (GENERATOR_CASES[1], (17, 26))])
def test_generator_equals_the_reference(fields, hw, random_params):
  x = _inputs((1, *hw, 3))
  fast, slow = fast_generator.Generator(**fields), ref.Generator(**fields)
  variables = random_params(slow, x)
  assert_same_tree(jax.eval_shape(fast.init, jax.random.key(0), x), variables)
  np.testing.assert_allclose(np.asarray(jax.jit(fast.apply)(variables, x)),
                             np.asarray(jax.jit(slow.apply)(variables, x)), atol=ATOL, rtol=0)


@pytest.mark.parametrize("fields", [dict(SMALL), dict(SMALL, norm="none", upsample="pixel_shuffle")])
def test_generator_gradients_equal_the_reference(fields, random_params):
  """Training differentiates the same code: the parameter gradients agree too.

  Not with residual=True: random weights saturate tanh, so the residual's clip
  sits at its kink on some pixels, and the reference's own jitted and eager
  gradients differ there by 0.3% (measured); the forward tests cover it.
  """
  x, target = _inputs((2, 24, 20, 3)), _inputs((2, 24, 20, 3), seed=5)
  fast, slow = fast_generator.Generator(**fields), ref.Generator(**fields)
  variables = random_params(slow, x)

  def loss(module):
    return jax.jit(jax.grad(lambda v: jnp.mean((module.apply(v, x) - target) ** 2)))

  g_fast, g_slow = loss(fast)(variables), loss(slow)(variables)
  for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_slow)):
    scale = max(float(jnp.abs(b).max()), 1e-3)
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize("config_name", ["default", "quickstart"])
def test_shipped_configs_equal_the_reference(config_name, random_params):
  """The paper config and the quickstart, at an odd size (compile-bound: small)."""
  fields = {k: (tuple(v) if isinstance(v, list) else v)
            for k, v in load_config_file(config_name).model.to_dict().items()}
  x = _inputs((1, 29, 37, 3))
  assert fields.pop("scales") == 1  # the reference is one pass; coarse to fine: test_generator
  assert fields.pop("coarse_down") == 0  # no coarse pass (tests/test_device_pairs.py)
  fast, slow = fast_generator.Generator(**fields), ref.Generator(**fields)
  variables = random_params(slow, x)
  np.testing.assert_allclose(np.asarray(jax.jit(fast.apply)(variables, x)),
                             np.asarray(jax.jit(slow.apply)(variables, x)), atol=ATOL, rtol=0)


@pytest.mark.parametrize("hw", [(5, 7), (1, 1), (4, 2)])
def test_conv_transpose_by_phases_equals_flax(hw):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = _inputs((2, *hw, 6))
  layer = nn.ConvTranspose(5, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)
  variables = layer.init(jax.random.key(0), x)
  got = fast_layers.conv_transpose_3x3_s2(x, variables["params"]["kernel"])
  np.testing.assert_allclose(np.asarray(got), np.asarray(layer.apply(variables, x)),
                             atol=ATOL, rtol=0)
