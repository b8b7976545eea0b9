"""The generator a training config describes (workdirs and shipped models alike)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from flax_gradnet.models.generator import Generator


def generator_from_config(config: Any, dtype: Any = None) -> Generator:
  """The generator a config describes (`config.model` holds Generator's fields).

  Args:
    config: an `ml_collections.ConfigDict` (a workdir's or shipped model's
      config.json, or a training config).
    dtype: compute dtype of the module (default: the config's `compute_dtype`).
  """
  if dtype is None:
    dtype = jnp.dtype(config.get("compute_dtype", "float32"))
  fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.to_dict().items()}
  known = set(Generator.__dataclass_fields__)
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"config.model has fields Generator does not know: {unknown}")
  return Generator(**fields, dtype=dtype)
