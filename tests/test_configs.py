"""The configs package: by path (`--config=configs/<name>.py`) and by import, the same config."""

import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A --config value for every config of the package; those that need an argument get one.
ARGS = {"ablations": "wo_rgcl", "finetune_folder": "/data/my_pairs"}
SPECS = [f"{name}:{ARGS[name]}" if name in ARGS else name for name in configs.names()]


# ml_collections' config_flags loads the file with the deprecated `load_module`.
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
@pytest.mark.parametrize("spec", SPECS)
def test_config_flag_by_path_equals_the_import(spec):
  name, sep, arg = spec.partition(":")
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values)
  flag_values(["prog", f"--config={ROOT / 'configs' / name}.py{sep}{arg}"])
  by_import = configs.load(f"configs/{name}.py{sep}{arg}")
  assert flag_values.config.to_dict() == by_import.to_dict()
  assert configs.load(spec).to_dict() == by_import.to_dict()


@pytest.mark.parametrize("spec", ["tests/tiny_config.py", "no_such_config", "configs/nope.py"])
def test_load_names_only_the_package_configs(spec):
  with pytest.raises(ValueError, match="names no config of the configs package"):
    configs.load(spec)


PACKAGE = pathlib.Path(configs.__file__).resolve().parent


def test_resolve_finds_the_package_configs_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  quickstart = str(PACKAGE / "quickstart.py")
  assert configs.resolve("configs/quickstart.py") == quickstart
  assert configs.resolve("quickstart") == quickstart
  assert configs.resolve("configs/ablations.py:wo_rgcl") == f"{PACKAGE / 'ablations.py'}:wo_rgcl"
  # A file that exists is itself, also when it has a package config's name.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "quickstart.py").write_text("def get_config(): ...\n")
  assert configs.resolve("configs/quickstart.py") == "configs/quickstart.py"
  # An absolute path is only ever itself: a missing one is an error.
  with pytest.raises(ValueError, match="no such file"):
    configs.resolve(str(tmp_path / "elsewhere" / "configs" / "default.py"))


@pytest.mark.parametrize("spec", ["configs/nope.py", "nope.py:arg", "tests/tiny_config.py"])
def test_resolve_names_what_it_tried(spec, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError) as info:
    configs.resolve(spec)
  message = str(info.value)
  assert repr(spec.partition(":")[0]) in message and str(tmp_path) in message
  assert str(PACKAGE) in message and all(name in message for name in configs.names())


def _main_from(cwd, *args):
  return subprocess.run([sys.executable, "-m", "flax_gradnet.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_main_loads_configs_by_package_path_from_any_folder(tmp_path):
  workdir = tmp_path / "w"
  # The config loads (the misspelt override is what is refused), so nothing trains.
  r = _main_from(tmp_path, "--config=configs/quickstart.py", f"--workdir={workdir}",
                 "--config.num_train_stepz=1")
  assert r.returncode == 2 and r.stderr.startswith(
      "error: unknown config field in the command line: 'num_train_stepz'"), r.stderr[-2000:]
  r = _main_from(tmp_path, "--config", "configs/nope.py", f"--workdir={workdir}")
  assert r.returncode == 2, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --config could not be loaded: ")
  assert "'configs/nope.py'" in lines[0] and "quickstart" in lines[0]
  assert not workdir.exists()


@pytest.mark.parametrize("spec", SPECS)
def test_every_config_records_valid_inference_settings(spec):
  """Each config records its inference settings (`config.inference`, valid
  `inference.Options`); one trained through the low-frequency step
  (loss_low_freq_sigma > 0) is deblurred through the same step."""
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  config = configs.load(spec)
  assert "inference" in config
  options = inference.Options.from_config(config)
  assert options.tile is None and options.max_memory is None  # the machine's, not the model's
  assert options.low_freq_sigma == config.loss_low_freq_sigma
  expected = {"gradnet_s_lf": "shrink", "finetune_folder": "shrink"}.get(spec.partition(":")[0],
                                                                         "off")
  assert options.self_ensemble == expected
