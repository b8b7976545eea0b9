"""experiments/ensemble_shrink.py: its variants are the library's ensembles."""

import importlib
import os
import sys

import jax.numpy as jnp
import numpy as np

from flax_gradnet import inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
ensemble_shrink = importlib.import_module("ensemble_shrink")


class _Fn:
  def apply(self, variables, x):
    del variables
    return 0.6 * jnp.roll(x, 1, axis=2) + 0.3 * x + 0.1 * jnp.tanh(3 * x)


def test_variants_equal_make_deblur_fn():
  x = np.random.default_rng(0).uniform(-0.9, 0.9, (9, 14, 3)).astype(np.float32)
  one = lambda z: _Fn().apply({}, z)
  members = np.asarray(jnp.stack(list(
      inference.ensemble_members(one, jnp.asarray(x[None])))))[:, 0]
  for variant, kind in (("off", "off"), ("mean", "mean"), ("shrink w5 (default)", "shrink")):
    want = np.asarray(inference.make_deblur_fn(_Fn(), {}, ensemble=kind)(x[None]))[0]
    got = ensemble_shrink.combine(members, x, ensemble_shrink.VARIANTS[variant])
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=variant)
  # The variance scale moves the result between the input and the mean.
  low = ensemble_shrink.combine(members, x, ensemble_shrink.VARIANTS["shrink w5 c4"])
  high = ensemble_shrink.combine(members, x, ensemble_shrink.VARIANTS["shrink w5 c0.25"])
  mean = members.mean(0)
  assert np.abs(low - x).sum() < np.abs(high - x).sum() < np.abs(mean - x).sum()
