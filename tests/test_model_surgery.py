"""experiments/model_surgery.py: the check-then-pack step of grow_mbrbs and widen_base."""

import importlib
import os
import sys

import numpy as np
import pytest

from flax_gradnet import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))
model_surgery = importlib.import_module("model_surgery")
widen_base = importlib.import_module("widen_base")


def test_a_widened_shipped_model_is_packed_and_loads_with_the_same_output(tmp_path):
  name = pretrained.DEFAULT_MODEL
  module, params, config = model_surgery.load_shipped(name)
  wide, wide_config = widen_base.widen(params, config, int(config.model.base_features) + 4)
  path, diff = model_surgery.check_and_pack(name, module, params, wide, wide_config,
                                            name="wide", root=str(tmp_path), source="test")
  assert diff <= 1e-5 and os.path.isdir(path)
  loaded_module, loaded = pretrained.load("wide", root=str(tmp_path))  # checksums verified
  image, _ = pretrained.reference_pair(name)
  np.testing.assert_allclose(pretrained.reference_output(loaded_module, loaded, image),
                             pretrained.reference_output(module, params, image), atol=1e-5)


def test_a_model_that_computes_something_else_is_not_packed(tmp_path):
  name = pretrained.DEFAULT_MODEL
  module, params, config = model_surgery.load_shipped(name)
  wide, wide_config = widen_base.widen(params, config, int(config.model.base_features) + 4)
  wide["out_conv"]["conv"]["bias"] = wide["out_conv"]["conv"]["bias"] + 0.5
  with pytest.raises(SystemExit, match="computes something else"):
    model_surgery.check_and_pack(name, module, params, wide, wide_config, name="bad",
                                 root=str(tmp_path), source="test")
  assert not (tmp_path / "bad").exists()
