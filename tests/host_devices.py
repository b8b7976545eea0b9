"""Runs a Python script in a subprocess on forced host (CPU) devices, for the
tests that compare a step split over devices with the same step on one."""

import os
import subprocess
import sys


def run_script(script: str, devices: int = 2) -> str:
  """Runs `script` with `python -c` on `devices` CPU devices
  (--xla_force_host_platform_device_count); asserts it exits 0 and printed
  "OK", and returns its standard output."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(filter(None, (
      os.environ.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={devices}"))))
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
  return result.stdout
