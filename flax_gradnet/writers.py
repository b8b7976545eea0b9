"""clu's metric writers, with or without TensorFlow.

`clu.metric_writers` imports TensorFlow for its `SummaryWriter` (TensorBoard
event files) when the package is imported, so on a machine without TensorFlow
(a preinstalled accelerator image, a slim container) even its TensorFlow-free
writers (`LoggingWriter`, `MultiWriter`, `AsyncWriter`) cannot be imported.
`metric_writers()` returns the package either way: without TensorFlow it first
installs a stand-in for the one TensorFlow module, whose `SummaryWriter`
refuses to be built, and `create_writer` then writes through clu's
`LoggingWriter` (the absl log: `<workdir>/train.INFO`) and says so once.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

_TF_MODULE = "clu.metric_writers.tf.summary_writer"
_warned = False


def has_tensorflow() -> bool:
  """Whether TensorFlow can be imported (found, and not blocked in sys.modules)."""
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"] is not None
  try:
    return importlib.util.find_spec("tensorflow") is not None
  except (ImportError, ValueError):
    return False


def metric_writers() -> Any:
  """The `clu.metric_writers` module, importable with or without TensorFlow."""
  if not has_tensorflow() and _TF_MODULE not in sys.modules:
    stub = types.ModuleType(_TF_MODULE)

    class SummaryWriter:  # pylint: disable=too-few-public-methods
      """Stands in for clu's TensorBoard writer where TensorFlow is not installed."""

      def __init__(self, *args, **kwargs):
        del args, kwargs
        raise ImportError("TensorBoard summaries (clu's SummaryWriter) need tensorflow; "
                          "pip install tensorflow-cpu, or use the logging writer")

    stub.SummaryWriter = SummaryWriter
    sys.modules[_TF_MODULE] = stub
  from clu import metric_writers as mw  # pylint: disable=g-import-not-at-top
  return mw


def create_writer(logdir: str, *, just_logging: bool = False, asynchronous: bool = True) -> Any:
  """clu's default writer (TensorBoard events in `logdir` and the absl log);
  without TensorFlow, the absl log alone, with one line on stderr saying so."""
  global _warned
  mw = metric_writers()
  if has_tensorflow():
    return mw.create_default_writer(logdir, just_logging=just_logging, asynchronous=asynchronous)
  if not just_logging and not _warned:
    _warned = True
    print("note: tensorflow is not installed: metrics go to the log file (clu's LoggingWriter), "
          "not to TensorBoard event files", file=sys.stderr, flush=True)
  writer = mw.LoggingWriter()
  return mw.AsyncWriter(writer) if asynchronous else writer
