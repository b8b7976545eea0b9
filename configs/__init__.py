"""The training configurations: one module per recipe, each with a `get_config`.

By path, through ml_collections' config flags (the text after a colon is
`get_config`'s argument):

  python -m flax_gradnet.main --config=configs/quickstart.py --workdir=...
  python -m flax_gradnet.main --config=configs/ablations.py:wo_rgcl --workdir=...

By import, which gives the same ConfigDict:

  from configs import quickstart
  config = quickstart.get_config()
  config = configs.load("configs/ablations.py:wo_rgcl")  # a --config value

The package lives at the top of the repository, beside `flax_gradnet/`, and is
installed with it, so `import configs` works from any directory once the
project is installed (`pip install -e .` or `pip install .`); so does
`--config=configs/<name>.py`: a `--config` file that does not exist relative to
the current directory but names a config of this package is this package's
file (`resolve`). A config derives from another by importing it
(`from configs import default`).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil

import ml_collections


def names() -> list[str]:
  """The configs of this package (`configs/<name>.py`)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _name(path: str) -> str:
  """The config of this package that `path` names: `<name>` for
  `configs/<name>.py` (any folder named `configs` before it), `<name>.py` and
  `<name>`; else `path` itself."""
  p = pathlib.PurePath(path)
  return p.stem if p.suffix == ".py" and p.parent.name in ("configs", "") else path


def load(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config that `spec` names, imported from this package.

  Args:
    spec: a config as `--config` names it, `configs/<name>.py` (any folder
      named `configs` before it), or just `<name>`; `:arg` after it is passed to
      `get_config(arg)`, as config_flags does.

  Raises:
    ValueError: `spec` names no config of this package.
  """
  path, sep, arg = spec.partition(":")
  name = _name(path)
  if name not in names():
    raise ValueError(f"{spec!r} names no config of the configs package; expected "
                     f"configs/<name>.py[:arg] or <name>[:arg] with <name> in {names()}")
  module = importlib.import_module(f"{__name__}.{name}")
  return module.get_config(arg) if sep else module.get_config()


def resolve(spec: str) -> str:
  """The config file a `--config` value means, for ml_collections' config flags.

  A file that exists (relative to the current directory, `~` expanded) is
  itself; otherwise a relative `configs/<name>.py`, `<name>.py` or `<name>`
  naming a config of this package is this package's file, wherever the
  command runs (an absolute path is only ever itself).

  Args:
    spec: a `--config` value, `path[:arg]`.

  Returns:
    `spec` with its path replaced by the file it means (`:arg` kept).

  Raises:
    ValueError: no such file, and no config of this package by that name; the
      message names the path tried, the folder and the package's configs.
  """
  path, sep, arg = spec.partition(":")
  if os.path.isfile(os.path.expanduser(path)):
    return spec
  name = _name(path)
  if name in names() and not os.path.isabs(os.path.expanduser(path)):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py") + sep + arg
  raise ValueError(
      f"{path!r}: no such file (in {os.getcwd()}), and {name!r} is no config of the configs "
      f"package ({os.path.dirname(os.path.abspath(__file__))}), whose configs are "
      f"{', '.join(names())}")
