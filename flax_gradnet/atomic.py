"""Atomic file writes: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import os
import tempfile
from typing import IO, Callable


def atomic_write(path: str, write: Callable[[IO], None], *, overwrite: bool = True,
                 binary: bool = True, hint: str = "overwrite=True") -> None:
  """Writes `path` through a temporary file in the same folder.

  Args:
    path: destination; its folder is created if missing.
    write: called with the open temporary file.
    overwrite: replace an existing file; otherwise raise FileExistsError, also
      when another process creates `path` while this one writes.
    binary: open the temporary file in binary mode.
    hint: how the caller's user asks for replacement (for the error message).
  """
  path = os.fspath(path)
  exists_error = FileExistsError(f"{path} exists (pass {hint} to replace it)")
  if not overwrite and os.path.lexists(path):
    raise exists_error
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results private
    with os.fdopen(fd, "wb" if binary else "w") as f:
      write(f)
    if overwrite:
      os.replace(tmp, path)
    else:
      try:
        os.link(tmp, path)  # atomic create-if-absent: a file created since the check wins
      except FileExistsError:
        raise exists_error from None
      except OSError:  # filesystems without hard links
        if os.path.lexists(path):
          raise exists_error from None
        os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
  """Writes (or replaces) a text file atomically (see `atomic_write`)."""
  atomic_write(path, lambda f: f.write(text), binary=False)
