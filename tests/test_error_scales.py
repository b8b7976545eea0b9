"""experiments/error_scales.py: the split of an error image by scale."""

import importlib
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
error_scales = importlib.import_module("error_scales")


def test_bands_put_an_offset_last_and_a_checkerboard_first():
  flat = np.full((40, 48, 3), 2.0)
  np.testing.assert_allclose(error_scales.bands(flat), [0, 0, 0, 0, 4.0], atol=1e-9)
  checker = 3.0 * (-1.0) ** np.add.outer(np.arange(40), np.arange(48))[..., None]
  b = error_scales.bands(np.repeat(checker, 3, axis=-1))
  assert b[0] > 0.9 * 9.0 and sum(b[1:]) < 0.1 * 9.0  # period 2: all below sigma 0.7
  # An error smooth over the whole image (a ramp) lies in the coarse bands.
  ramp = np.linspace(-1, 1, 48)[None, :, None] * np.ones((40, 1, 3))
  b = error_scales.bands(ramp)
  assert sum(b[3:]) > 0.95 * sum(b) and b[0] < 1e-3 * sum(b)
