"""The configs package: by path (`--config=configs/<name>.py`) and by import, the same config."""

import pathlib

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
