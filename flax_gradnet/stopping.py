"""Why a training run stops before its last step, and how it says so.

SIGTERM (`Preemption`: save the current step, exit `PREEMPTED_EXIT_STATUS`),
a wall-clock budget (`TimeBudget`, config.train_seconds) and divergence
(`check_finite`: NaN or Inf, never checkpointed). `train._train_loop` asks
each of them after every step; all three agree across processes.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils


class NonFiniteError(FloatingPointError):
  """Training produced NaN or Inf; the last good checkpoint is kept."""


# `python -m flax_gradnet.main` exits with this status after a SIGTERM: the
# checkpoint is saved, training is *not* finished (so `main && evaluate` stops),
# and 128 + SIGTERM is what schedulers expect of a process they terminated.
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(Exception):
  """SIGTERM stopped training after a checkpoint of `step` was saved; rerun to resume."""

  def __init__(self, step: int, workdir: epath.PathLike):
    super().__init__(f"SIGTERM: checkpoint saved at step {step} in {workdir}; training is not "
                     "finished. Run the same command again to resume from it.")
    self.step = step
    self.workdir = workdir


# A SIGTERM that `python -m flax_gradnet.main` received before the loop's own
# handler was installed (`note_early_sigterm`). Its handler exits at once, but a
# library running start-up work (data preparation, compilation) may catch that
# exit; the loop then stops at its first step, saved, as after any SIGTERM.
_early_sigterm = False


def note_early_sigterm() -> None:
  """Records a SIGTERM received before the training loop started (see above)."""
  global _early_sigterm
  _early_sigterm = True


class Preemption:
  """Turns SIGTERM into a stop the loop checks, so it can checkpoint and exit.

  One process: a Python SIGTERM handler sets a flag. Several processes: JAX's
  preemption notifier (installed by `jax.distributed.initialize`) catches
  SIGTERM on any of them, and orbax's `reached_preemption(step)` is true on
  every process at the same step, so all of them save that step and stop.
  """

  def __init__(self, manager: ocp.CheckpointManager | None = None):
    global _early_sigterm
    self.requested, _early_sigterm = _early_sigterm, False
    self._previous = None
    self._manager = manager if jax.process_count() > 1 else None

  def check(self, step: int) -> bool:
    """True (on every process alike) once the run must save `step` and stop."""
    if self._manager is not None and self._manager.reached_preemption(step):
      self.requested = True
    return self.requested

  def __enter__(self):
    if self._manager is not None:
      return self  # the JAX preemption notifier owns SIGTERM
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread: no signal handling
      self._previous = None
    return self

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint before exit.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def check_finite(history: list[dict[str, Any]], first_step: int) -> list[dict[str, Any]]:
  """Fetches the metrics to the host; raises NonFiniteError naming the first
  step and metric that is not finite."""
  host = jax.device_get(history)
  for offset, m in enumerate(host):
    for name, value in m.items():
      value = np.asarray(value)
      if name == "params_finite":
        bad = not np.all(value == 1.0)
      else:
        bad = not np.all(np.isfinite(value))
      if bad:
        raise NonFiniteError(
            f"training diverged at step {first_step + offset}: {name} = {value!r}. "
            "No checkpoint was written after the last finite step; lower the learning rate "
            "or check the data, then restart from that checkpoint.")
  return host


class TimeBudget:
  """config.train_seconds: stops training once that many seconds have passed.

  The clock starts at construction (the loop's start: the first step's
  compilation counts) and restarts with each run of the command, so a resumed
  run trains for the budget again. The learning-rate schedules stay functions
  of the step over `num_train_steps` (a compiled step cannot depend on the
  clock, and resuming stays exact): a budget stops the run early, before a
  cosine schedule has decayed, unless num_train_steps is set to the steps the
  budget allows (the stop's warning names the number reached).

  One process checks the clock after every step. With several processes,
  process 0's clock decides every `every` steps (broadcast to all), so every
  process stops after the same step.
  """

  def __init__(self, seconds: float, *, every: int = 1,
               clock: Callable[[], float] = time.monotonic):
    self.seconds = float(seconds)
    self.every = max(1, int(every))
    self._clock = clock
    self._start = clock()

  def elapsed(self) -> float:
    return self._clock() - self._start

  def spent(self, step: int) -> bool:
    """Whether training must stop after `step` (the same on every process)."""
    if self.seconds <= 0:
      return False
    if jax.process_count() == 1:
      return self.elapsed() >= self.seconds
    if step % self.every:
      return False
    over = np.int32(self.elapsed() >= self.seconds)
    return bool(multihost_utils.broadcast_one_to_all(over))
