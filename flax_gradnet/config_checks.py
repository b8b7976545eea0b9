"""Config validation: the checks a training run makes before it writes anything.

`preflight(config, workdir)` is all of them (`train.train_and_evaluate` and the
tools that train call it first): the workdir is a folder, the global batch
divides over the devices (`batch_shares`), the content loss's weights exist,
the config's choices are known values, and a workdir that holds checkpoints is
resumed only with the values of `RESUME_FIXED_FIELDS` it was trained with
(`resume_conflicts`). Each failure is a one-line error naming the field.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from etils import epath
from flax import traverse_util

from flax_gradnet import steps
from flax_gradnet import workdir as workdir_lib
from flax_gradnet.models import Generator


def batch_shares(batch_size: int, num_devices: int | None = None,
                 num_processes: int | None = None) -> tuple[int, int]:
  """(per-process, per-device) shares of the global batch `config.batch_size`.

  Raises:
    ValueError: naming the numbers, when the batch does not split evenly.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = jax.process_count() if num_processes is None else num_processes
  if batch_size < 1 or batch_size % num_devices:
    raise ValueError(
        f"config.batch_size={batch_size} is the global batch (all devices of all processes "
        f"together) and must be a positive multiple of the {num_devices} device(s) "
        f"({num_processes} process(es)); e.g. {num_devices * max(1, batch_size // num_devices)}. "
        "Scale config.learning_rate with it if you change it (README, Training).")
  return batch_size // num_processes, batch_size // num_devices



# Fields a resumed run must keep: they shape the saved state (both networks, and
# Adam's moments, whose meaning b1 and b2 set) or the data stream that the saved
# iterator state indexes. Run length, learning rates, logging, evaluation and
# paths may change between restarts, and so may config.coarse_task (its pairs are
# drawn from the step and the seed, not from a saved iterator: e.g. a larger batch
# on an accelerator).
RESUME_FIXED_FIELDS = ("model", "critic_features", "critic_layers", "critic_batches", "b1",
                       "b2", "batch_size", "dataset", "dataset_options", "crop_size", "seed")
# And whether config.coarse_task has a warm-up: it sets the optimizer's shape (one
# Adam per group, steps.grouped_adam); its length may change, like the run's.
RESUME_FIXED_KEYS = ("coarse_task.warmup_steps",)


def _flat_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{"model.base_features": 16, ...} with values as config.json stores them."""
  return traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")


def resume_conflicts(config: ml_collections.ConfigDict,
                     workdir: epath.PathLike) -> list[str]:
  """`RESUME_FIXED_FIELDS` that differ from the config of `workdir`'s checkpoints.

  Empty when the workdir holds no checkpoint. A `model.` field absent from an
  older config.json is compared as Generator's default (what that checkpoint
  was built with); other absent fields are not compared.
  """
  if not workdir_lib.saved_steps(workdir):
    return []
  if not (workdir_lib.workdir_path(workdir) / workdir_lib.CONFIG_FILE).is_file():
    return []
  stored = _flat_json(workdir_lib.load_config(workdir))
  new = _flat_json(config)
  out = []
  for key in sorted(set(stored) | set(new)):
    if not (key.split(".")[0] in RESUME_FIXED_FIELDS or key in RESUME_FIXED_KEYS):
      continue
    if key in RESUME_FIXED_KEYS:  # none or some; absent: from before the field, none
      if bool(stored.get(key)) != bool(new.get(key)):
        out.append(f"{key}: {stored.get(key, 'absent (0)')} -> {new.get(key)!r}")
      continue
    if key not in stored:  # written before the field existed: its default then
      name = key.split(".", 1)[1] if key.startswith("model.") else None
      fields = Generator.__dataclass_fields__
      if name in fields and new.get(key) != fields[name].default:
        out.append(f"{key}: absent (default {fields[name].default!r}) -> {new.get(key)!r}")
      continue
    if stored.get(key) != new.get(key):
      out.append(f"{key}: {stored.get(key)!r} -> {new.get(key)!r}")
  return out


def preflight(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
  """The checks a run makes before it writes anything, each a one-line error.

  Raises:
    ValueError: the workdir is a file; the batch does not divide over the
      devices; the workdir's checkpoints were trained with other values of
      `RESUME_FIXED_FIELDS` (its config.json is left as it is).
    FileNotFoundError: the content loss needs VGG19 weights that are missing;
      config.dataset_options.photo_dir is not a folder.
  """
  workdir = workdir_lib.workdir_path(workdir)
  workdir_lib.check_folder(workdir)
  batch_shares(config.batch_size)
  steps.check_content_loss(config)
  if config.init_scheme not in steps.INIT_SCHEMES:
    raise ValueError(f"config.init_scheme must be one of {steps.INIT_SCHEMES}, got "
                     f"{config.init_scheme!r}.")
  if config.critic_batches not in ("same", "fresh"):
    raise ValueError(f"config.critic_batches must be 'same' or 'fresh', got "
                     f"{config.critic_batches!r}.")
  sigma = config.get("loss_low_freq_sigma", 0.0)
  if not isinstance(sigma, (int, float)) or not sigma >= 0:  # also NaN
    raise ValueError(f"config.loss_low_freq_sigma must be a number >= 0 pixels (0 = off), got "
                     f"{sigma!r}.")
  weight = config.get("scale_loss_weight", 0.0)
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
    raise ValueError(f"config.scale_loss_weight must be a number >= 0 (0 = off), got "
                     f"{weight!r}.")
  if weight > 0 and config.model.get("scales", 1) < 2:
    raise ValueError(f"config.scale_loss_weight={weight} weighs the coarse passes' losses, but "
                     f"config.model.scales={config.model.get('scales', 1)} has none: set "
                     "model.scales >= 2 or scale_loss_weight = 0.")
  photo_dir = config.get("dataset_options", {}).get("photo_dir", "")
  if photo_dir and not os.path.isdir(os.path.expanduser(photo_dir)):
    raise FileNotFoundError(f"config.dataset_options.photo_dir={photo_dir!r} is not a folder: "
                            "fill one with experiments/fetch_photos.sh DIR (docs/data.md) or "
                            "your own photographs, or leave the field empty.")
  from flax_gradnet.data import device_pairs  # pylint: disable=g-import-not-at-top
  device_pairs.check_coarse_task(config)
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  inference.Options.from_config(config)  # config.inference: known fields, valid values
  budget = config.get("train_seconds", 0.0)
  if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
    raise ValueError(f"config.train_seconds must be a number of seconds >= 0 (0 = no time "
                     f"limit), got {budget!r}.")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"config.ema_decay must be in [0, 1) (0 = no EMA of the generator's "
                     f"weights), got {config.ema_decay!r}.")
  if config.model.get("channels", 3) not in (1, 3):
    raise ValueError(f"config.model.channels={config.model.channels}: the training data sets "
                     "hold RGB images, which the pipeline converts to 1 (grey) or 3 channels; "
                     "other counts need your own input pipeline (the modules, losses and "
                     "metrics take any count).")
  conflicts = resume_conflicts(config, workdir)
  if conflicts:
    raise ValueError(
        f"{workdir} holds checkpoints trained with other values of fields that shape the saved "
        f"state or the data stream ({'; '.join(conflicts)}). Restore them to resume, or train "
        f"in a new --workdir (--config.init_from={workdir} starts from its generator).")
