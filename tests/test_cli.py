"""One command-line convention across the tools (flax_gradnet/cli.py): --help with
examples, the shared flag names, `--x/--no-x` switches, exit status 2 when nothing
ran, and a console script for each tool."""

import argparse
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from flax_gradnet import cli, convert_vgg19, cost, deblur, evaluate, export
from flax_gradnet.pretrained import __main__ as pretrained_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The argparse tools: module -> its parser.
PARSED = {"evaluate": evaluate, "deblur": deblur, "export": export,
          "convert_vgg19": convert_vgg19, "cost": cost, "pretrained": pretrained_cli}
# main and demo define the same absl flags: each runs in its own process.
ABSL = ("main", "demo")
SCRIPTS = {"flax-gradnet-train": "flax_gradnet.main", "flax-gradnet-demo": "flax_gradnet.demo",
           "flax-gradnet-evaluate": "flax_gradnet.evaluate",
           "flax-gradnet-deblur": "flax_gradnet.deblur",
           "flax-gradnet-export": "flax_gradnet.export",
           "flax-gradnet-convert-vgg19": "flax_gradnet.convert_vgg19",
           "flax-gradnet-cost": "flax_gradnet.cost",
           "flax-gradnet-pretrained": "flax_gradnet.pretrained.__main__"}


def _absl(tool, *args):
  return subprocess.run([sys.executable, "-m", f"flax_gradnet.{tool}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("tool", sorted(PARSED))
def test_help_exits_0_with_examples(tool, capsys):
  with pytest.raises(SystemExit) as info:
    PARSED[tool].main(["--help"])
  out = capsys.readouterr().out
  assert info.value.code == cli.EXIT_OK
  assert "\nExamples:\n" in out and f"python -m flax_gradnet.{tool} --" in out


@pytest.mark.parametrize("tool", ABSL)
def test_absl_help_exits_0_with_examples(tool):
  r = _absl(tool, "--help")
  assert r.returncode == cli.EXIT_OK, r.stderr[-2000:]
  assert "\nExamples:\n" in r.stdout and f"python -m flax_gradnet.{tool} --" in r.stdout
  assert "--workdir" in r.stdout and "--config.<field>=value" in r.stdout


@pytest.mark.parametrize("tool", ABSL)
def test_absl_missing_config_exits_2_naming_it(tool, tmp_path):
  r = _absl(tool, f"--config={tmp_path / 'no_such_config.py'}", f"--workdir={tmp_path / 'w'}")
  assert r.returncode == cli.EXIT_NOTHING_RAN, r.stderr[-2000:]
  assert r.stderr.startswith("error: ") and "no_such_config.py" in r.stderr
  assert not (tmp_path / "w").exists()
  r = _absl(tool, "stray", "--config=configs/quickstart.py", f"--workdir={tmp_path / 'w'}")
  assert r.returncode == cli.EXIT_NOTHING_RAN and "stray" in r.stderr


def test_missing_inputs_exit_2_naming_them(tmp_path, capsys):
  nowhere, out = str(tmp_path / "no_workdir"), str(tmp_path / "out")
  runs = {
      "deblur": ([str(tmp_path / "missing.png"), "--output_dir", out], "missing.png"),
      "evaluate": (["--workdir", nowhere, "--dataset", "synthetic", "--output_dir", out],
                   "no_workdir"),
      "export": (["--workdir", nowhere, "--output", str(tmp_path / "g.jaxexport")], "no_workdir"),
      "convert_vgg19": (["--input", str(tmp_path / "vgg19.pth"), "--output",
                         str(tmp_path / "vgg.npz")], "vgg19.pth"),
      "pretrained": (["--workdir", nowhere, "--name", "m", "--root", str(tmp_path / "m")],
                     "no_workdir"),
  }
  for tool, (argv, named) in runs.items():
    assert PARSED[tool].main(argv) == cli.EXIT_NOTHING_RAN, tool
    err = capsys.readouterr().err
    assert "error: " in err and named in err, (tool, err)
  assert not os.listdir(tmp_path)  # nothing written
  # cost reads no files: a bad argument is its "nothing ran"
  with pytest.raises(SystemExit) as info:
    cost.main(["--variants", "no_such_variant"])
  assert info.value.code == cli.EXIT_NOTHING_RAN
  assert "no_such_variant" in capsys.readouterr().err


def test_convert_vgg19_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
  out = tmp_path / "vgg.npz"
  out.write_bytes(b"old")
  argv = ["--input", str(tmp_path / "vgg19.pth"), "--output", str(out)]
  assert convert_vgg19.main(argv) == cli.EXIT_NOTHING_RAN
  assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"old"
  assert convert_vgg19.main(argv + ["--overwrite"]) == cli.EXIT_NOTHING_RAN  # no input
  assert "vgg19.pth" in capsys.readouterr().err and out.read_bytes() == b"old"


def _options(tool) -> dict[str, argparse.Action]:
  parser = PARSED[tool]._parser()  # pylint: disable=protected-access
  return {o: a for a in parser._actions for o in a.option_strings}  # pylint: disable=protected-access


def test_shared_flags_have_one_definition():
  shared = {"--workdir", "--model", "--step", "--weights", "--dtype", "--output_dir", "--output",
            "--data_dir", "--manual_dir", "--path", "--overwrite", "--tile", "--tile_overlap",
            "--self_ensemble", "--local_stats"}
  seen: dict[str, tuple] = {}
  for tool in PARSED:
    for name, action in _options(tool).items():
      if name in shared and name not in ("--workdir", "--output_dir", "--output", "--overwrite"):
        # same type, choices, default and help in every tool that has the flag
        spec = (type(action), action.type, action.choices, action.default, action.help)
        assert seen.setdefault(name, spec) == spec, (tool, name)
  assert {"--workdir", "--step", "--weights"} <= set(_options("export"))
  assert {"--tile", "--tile_overlap", "--self_ensemble", "--local_stats"} <= (
      set(_options("deblur")) & set(_options("evaluate")))
  # the older spellings are gone from --help (hidden aliases at most)
  for tool in PARSED:
    for name, action in _options(tool).items():
      if name in ("--no_progress", "--models"):
        assert action.help == argparse.SUPPRESS, (tool, name)


def test_switches_are_x_and_no_x():
  for tool in PARSED:
    for name, action in _options(tool).items():
      if action.nargs == 0 and action.help != argparse.SUPPRESS and name not in (
          "-h", "--help", "--list"):  # --list is a command of pretrained, not a setting
        assert isinstance(action, argparse.BooleanOptionalAction), (tool, name)
  ns = evaluate._parser().parse_args  # pylint: disable=protected-access
  base = ["--dataset", "synthetic", "--output_dir", "o"]
  assert ns(base).progress and not ns(base + ["--no-progress"]).progress
  assert not ns(base + ["--no_progress"]).progress  # the older spelling still works
  assert not ns(base + ["--no-save_outputs"]).save_outputs
  # --self_ensemble takes a value; alone it means "mean" (its meaning when it
  # was a switch), --no-self_ensemble "off"; the default is "shrink".
  assert ns(base).self_ensemble == "shrink" == cli.ENSEMBLE_DEFAULT
  assert ns(base + ["--self_ensemble"]).self_ensemble == "mean"
  assert ns(base + ["--no-self_ensemble"]).self_ensemble == "off"
  assert ns(base + ["--self_ensemble=off"]).self_ensemble == "off"


def test_examples_come_from_the_docstring():
  doc = """Tool.

      python -m flax_gradnet.x --a=1 \\
          --b=2
      flax-gradnet-x --c

  Not an example: python -m flax_gradnet.x in prose.
  """
  assert cli.examples(doc) == ("Examples:\n  python -m flax_gradnet.x --a=1 \\\n"
                               "      --b=2\n  flax-gradnet-x --c")
  with pytest.raises(ValueError):
    cli.examples("No command here.")


def test_a_console_script_for_each_tool():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  lines = [l.strip() for l in cfg["options.entry_points"]["console_scripts"].splitlines()
           if l.strip()]
  scripts = dict(tuple(p.strip() for p in l.split("=")) for l in lines)
  assert scripts == {name: f"{module}:run" for name, module in SCRIPTS.items()}
  for module in SCRIPTS.values():
    if module.split(".")[-1] in ABSL:  # importing both would define their flags twice
      with open(importlib.util.find_spec(module).origin) as f:
        assert "\ndef run(" in f.read()
    else:
      assert callable(importlib.import_module(module).run)
