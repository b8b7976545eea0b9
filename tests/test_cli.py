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
  # was a switch), --no-self_ensemble "off"; not given, None: the model's own.
  assert ns(base).self_ensemble is None
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


def test_flags_are_never_abbreviated(tmp_path, monkeypatch, capsys):
  # `--output x.png` on a tool with --output_dir is an unknown flag, not a folder named x.png.
  monkeypatch.chdir(tmp_path)
  (tmp_path / "in.png").write_bytes(b"")
  for tool, argv in (("deblur", ["in.png", "--output", "x.png"]),
                     ("evaluate", ["--dataset", "synthetic", "--output", "x.png"])):
    with pytest.raises(SystemExit) as info:
      PARSED[tool].main(argv)
    assert info.value.code == cli.EXIT_NOTHING_RAN, tool
    assert "required: --output_dir" in capsys.readouterr().err, tool
    with pytest.raises(SystemExit) as info:
      PARSED[tool].main(argv + ["--output_dir", "o"])
    assert info.value.code == cli.EXIT_NOTHING_RAN, tool
    assert "unrecognized arguments: --output" in capsys.readouterr().err, tool
  assert sorted(os.listdir(tmp_path)) == ["in.png"]
  for tool in PARSED:
    assert not PARSED[tool]._parser().allow_abbrev, tool  # pylint: disable=protected-access


def _shown_defaults(value) -> list[str]:
  """How a help text may write `value`: 'on'/'off' for a switch; a float also as %g."""
  if isinstance(value, bool):
    return ["default: on" if value else "default: off"]
  shown = [str(value)]
  if isinstance(value, float):
    shown.append(f"{value:g}")
  return shown


@pytest.mark.parametrize("tool", sorted(PARSED))
def test_help_shows_every_default(tool):
  parser = PARSED[tool]._parser()  # pylint: disable=protected-access
  checked = 0
  for action in parser._actions:  # pylint: disable=protected-access
    if (not action.option_strings or action.help == argparse.SUPPRESS or action.required
        or action.default in (None, argparse.SUPPRESS, [])):
      continue
    formatter = parser._get_formatter()  # pylint: disable=protected-access
    text = " ".join(formatter._expand_help(action).split())  # pylint: disable=protected-access
    assert "default" in text.lower(), (tool, action.option_strings, text)
    if len(str(action.default)) <= 40:  # a long one (a list of all choices) is put in words
      assert any(s in text for s in _shown_defaults(action.default)), (
          tool, action.option_strings, action.default, text)
    checked += 1
  assert checked >= 2, tool  # every tool has defaults (at least --help's neighbours)
  # and the full --help shows them (the formatter, not only the help strings)
  assert "(default: " in parser.format_help()


def test_console_scripts_show_their_own_name(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["/venv/bin/flax-gradnet-deblur", "--bogus"])
  assert deblur._parser().prog == "flax-gradnet-deblur"  # pylint: disable=protected-access
  with pytest.raises(SystemExit):
    deblur.main(["--bogus"])
  assert capsys.readouterr().err.startswith("usage: flax-gradnet-deblur ")
  # pip's launchers on Windows end in .exe; run as a module, a tool names the module.
  monkeypatch.setattr(sys, "argv", [os.path.join("venv", "Scripts", "flax-gradnet-cost.exe")])
  assert cli.prog_name("python -m flax_gradnet.cost") == "flax-gradnet-cost"
  monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "flax_gradnet", "deblur.py")])
  assert deblur._parser().prog == "python -m flax_gradnet.deblur"  # pylint: disable=protected-access


@pytest.mark.parametrize("script", ["flax-gradnet-deblur", "flax-gradnet-train"])
def test_installed_console_scripts_name_themselves(script):
  path = os.path.join(os.path.dirname(sys.executable), script)
  if not os.path.isfile(path):
    pytest.skip(f"{script} is not installed next to {sys.executable} (pip install -e .)")
  r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == cli.EXIT_OK, r.stderr[-2000:]
  assert r.stdout.startswith(f"usage: {script} ") and "python -m flax_gradnet" not in (
      r.stdout.split("\n\n")[0]), r.stdout[:500]


def test_progress_and_max_memory_are_shared_flags():
  base = {"deblur": ["in.png", "--output_dir", "o"],
          "evaluate": ["--dataset", "synthetic", "--output_dir", "o"]}
  for tool, argv in base.items():
    parse = PARSED[tool]._parser().parse_args  # pylint: disable=protected-access
    assert parse(argv).progress and not parse(argv + ["--no-progress"]).progress, tool
  parse = deblur._parser().parse_args  # pylint: disable=protected-access
  args = parse(base["deblur"])
  # Not given: the model's budget, else the tools' (deblur.resolve_options).
  assert args.max_memory is None and cli.MAX_MEMORY_DEFAULT_GIB == 3.0
  assert cli.inference_flags_error(args) is None
  assert parse(base["deblur"] + ["--max_memory", "0.5"]).max_memory == 0.5
  for bad in ("0", "-1", "nan", "inf"):
    problem = cli.inference_flags_error(parse(base["deblur"] + ["--max_memory", bad]))
    assert problem is not None and "--max_memory" in problem, bad
  # adding --progress twice (a tool's own call and add_inference_flags') is harmless
  p = argparse.ArgumentParser()
  cli.add_progress_flag(p, old_negation="--no_progress")
  cli.add_inference_flags(p)
  assert not p.parse_args(["--no_progress"]).progress and p.parse_args([]).progress


def test_inference_flags_default_to_the_models_settings():
  from flax_gradnet import inference  # pylint: disable=g-import-not-at-top
  # cli spells inference's choices itself (it imports no jax): the same tuple.
  assert cli.ENSEMBLES == inference.ENSEMBLES
  assert cli.TILE_OVERLAP_DEFAULT == inference.TILE_OVERLAP == inference.Options().tile_overlap
  assert set(cli.INFERENCE_FLAGS) <= set(inference.Options.fields())
  parse = deblur._parser().parse_args  # pylint: disable=protected-access
  base = ["in.png", "--output_dir", "o"]
  args = parse(base)
  # Every inference flag is None when not given: the model's recorded setting.
  assert cli.inference_overrides(args) == dict.fromkeys(cli.INFERENCE_FLAGS)
  assert cli.options_source(args, recorded=False).startswith("the paper's protocol")
  args = parse(base + ["--no-self_ensemble", "--low_freq_sigma=4", "--local_stats", "--tile=64",
                       "--tile_overlap=8", "--scale_gate=1.07", "--max_memory=2"])
  assert cli.inference_overrides(args) == dict(self_ensemble="off", low_freq_sigma=4.0,
                                               local_stats=-1, tile=64, tile_overlap=8,
                                               scale_gate=1.07, max_memory=2.0)
  assert cli.options_source(args, recorded=True) == (
      "--self_ensemble, --low_freq_sigma, --local_stats, --tile, --tile_overlap, --scale_gate, "
      "--max_memory over the model's recorded options")
  for tool in PARSED:
    for name, action in _options(tool).items():
      if name in ("--self_ensemble", "--low_freq_sigma", "--local_stats", "--tile",
                  "--tile_overlap", "--scale_gate"):
        assert action.default is None and "the model's recorded setting" in action.help, name
  # The flags' own ranges; a tile's multiple of the stride waits for the model.
  assert cli.inference_flags_error(parse(base + ["--tile=30"])) is None
  for bad, word in ((["--tile=0"], "--tile"), (["--tile_overlap=-1"], "--tile_overlap"),
                    (["--tile=32", "--tile_overlap=32"], "--tile_overlap"),
                    (["--low_freq_sigma=-1"], "--low_freq_sigma"),
                    (["--low_freq_sigma=nan"], "--low_freq_sigma"),
                    (["--local_stats=-4"], "--local_stats"),
                    (["--scale_gate=-1"], "--scale_gate"), (["--scale_gate=inf"], "--scale_gate")):
    problem = cli.inference_flags_error(parse(base + bad))
    assert problem is not None and word in problem, bad
  # --tile_overlap alone applies to the model's tiles or the budget's.
  assert cli.inference_flags_error(parse(base + ["--tile_overlap=8"])) is None
