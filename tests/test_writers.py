"""flax_gradnet/writers.py: clu's metric writers with and without TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from flax_gradnet import writers

# Run in a fresh interpreter where `tensorflow` cannot be imported (as where it
# is not installed); prints one JSON line of what it saw.
_WITHOUT_TF = r"""
import json, sys
sys.modules["tensorflow"] = None
from flax_gradnet import writers
mw = writers.metric_writers()
first = writers.create_writer(sys.argv[1])
second = writers.create_writer(sys.argv[1], asynchronous=False)
quiet = writers.create_writer(sys.argv[1], just_logging=True)
second.write_scalars(3, {"train/loss": 0.5})
try:
  mw.SummaryWriter(sys.argv[1])
  refused = ""
except ImportError as e:
  refused = str(e)
print(json.dumps({
    "has_tensorflow": writers.has_tensorflow(),
    "first": type(first).__name__, "inner": type(getattr(first, "_writer", None)).__name__,
    "second": type(second).__name__, "quiet": type(quiet).__name__, "refused": refused,
    "tf_loaded": [m for m, v in sys.modules.items()
                  if v is not None and m.split(".")[0] == "tensorflow"]}))
"""


def test_without_tensorflow_the_log_writer_says_so_once(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _WITHOUT_TF, str(tmp_path)], capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  seen = json.loads(proc.stdout.strip().splitlines()[-1])
  assert seen == {"has_tensorflow": False, "first": "AsyncWriter", "inner": "LoggingWriter",
                  "second": "LoggingWriter", "quiet": "AsyncWriter",
                  "refused": seen["refused"], "tf_loaded": []}
  assert "need tensorflow" in seen["refused"]
  notes = [l for l in proc.stderr.splitlines() if "tensorflow is not installed" in l]
  assert len(notes) == 1, proc.stderr  # three writers, one line
  assert not list(tmp_path.iterdir())  # no event files


def test_with_tensorflow_event_files_are_written(tmp_path):
  if not writers.has_tensorflow():
    pytest.skip("tensorflow is not installed (the test above covers that case)")
  writer = writers.create_writer(str(tmp_path), asynchronous=False)
  writer.write_scalars(1, {"x": 1.0})
  writer.flush()
  assert list(tmp_path.glob("events.out.tfevents.*"))
