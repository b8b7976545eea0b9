"""Shared fixtures of the model tests (test_layers, test_generator, test_critic)."""

import os

# XLA's LLVM back end at -O0 for the whole test run, in-process and in the
# subprocesses (they inherit the environment; tests that set XLA_FLAGS append to
# it). The suite compiles hundreds of tiny programs and runs each a few times:
# LLVM's optimisation is most of a compile (a tiny generator's init: ~13 s of CPU
# at the default level, ~1.5 s at 0) and buys nothing at these sizes. What a test
# checks is the program's semantics, which the optimisation level does not change
# (floating-point results may differ in the last bits, within every tolerance).
# FLAX_GRADNET_TEST_XLA_OPT=1 runs the suite at XLA's default level instead.
if os.environ.get("FLAX_GRADNET_TEST_XLA_OPT", "") in ("", "0"):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS"),
                                                   "--xla_backend_optimization_level=0")))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import configs
import tiny_config


def _random_params(model, *args, seed=0):
  """Variables of `model` at the shapes/dtypes its init declares, filled by numpy.

  Kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2),
  so biases are exercised too. A real `init` compiles a threefry kernel per
  parameter: seconds for a tiny model on XLA CPU, and tests that need the
  module's own initial values call `init` themselves.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if path[-1].key == "scale":
      a = 1.0 + 0.1 * rng.normal(size=s.shape)
    elif len(s.shape) >= 2:
      a = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    else:
      a = 0.1 * rng.normal(size=s.shape)
    return jnp.asarray(a, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture
def random_params():
  """`random_params(model, *init_args, seed=0)` -> variables (see `_random_params`)."""
  return _random_params


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
  """A per-session persistent XLA cache: the training tests compile the same
  tiny steps several times (fresh runs, resumed runs), and each hit saves a
  compile. Starts empty, so no result depends on an earlier session."""
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield


def import_or_skip(module, extra="test"):
  """`module` imported, or the caller skipped (at module level: the whole file).

  For the packages of the test extras (torch, the independent reference of the
  model tests) and of the converter's `convert` extras (torch, safetensors,
  h5py): `make test` installs them all, so CI runs every such test.
  """
  __tracebackhide__ = True  # the skip names the test (or test file), not this line
  return pytest.importorskip(module, reason=f"{module} is not installed: it comes with the "
                                            f"{extra!r} extras, pip install -e '.[{extra}]'")


def load_config_file(name, arg=None):
  """`configs/<name>.py`'s get_config(arg), imported from the configs package."""
  return configs.load(name if arg is None else f"{name}:{arg}")


@pytest.fixture(scope="session")
def tiny_train_config():
  """`make(data_dir, **overrides)`: tests/tiny_config.py with data_dir and overrides."""

  def make(data_dir, **overrides):
    config = tiny_config.get_config()
    config.data_dir = data_dir
    for key, value in overrides.items():
      config[key] = value
    return config

  return make


def write_generator_workdir(workdir, model_fields, params, step):
  """Lays out `workdir` exactly as training does (config.json + an orbax
  checkpoint), holding `params` for a Generator with `model_fields`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from flax_gradnet import checkpoints
  from flax_gradnet import workdir as workdir_lib
  # pylint: enable=g-import-not-at-top
  workdir_lib.save_config(str(workdir), ml_collections.ConfigDict(
      {"model": dict(model_fields), "compute_dtype": "float32"}))
  mngr = checkpoints.checkpoint_manager(str(workdir))
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"generator": {"params": params},
                                   "critic": {"params": {"w": jnp.zeros(2)}}}),
      data=ocp.args.JsonSave({})))
  mngr.wait_until_finished()
  mngr.close()


@pytest.fixture(scope="session")
def generator_workdir():
  """`write(workdir, model_fields, params, step)`: see `write_generator_workdir`."""
  return write_generator_workdir


# `make test-fast` (pytest -m "not slow") skips these modules: each trains, or runs
# the tools end to end in subprocesses, for minutes on 2 CPU cores. CI and
# `make test` run everything.
SLOW_MODULES = frozenset({
    "test_train.py", "test_multiprocess.py", "test_demo.py", "test_remote_workdir.py",
    "test_workdir_lock.py", "test_export.py", "test_channels.py", "test_fast_generator.py",
    "test_accelerator_run.py",
})


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.path.name in SLOW_MODULES:
      item.add_marker(pytest.mark.slow)
