"""Atomic file writes: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import os
import tempfile
from typing import IO, Callable


# The temporary files' name prefix: hidden, and never a name a user gave.
_PREFIX = ".tmp-"


def _naming(error: OSError, path: str) -> OSError:
  """`error` as the caller should see it: an OS error about a temporary file
  (or about no file: a full disk) names the destination `path` instead, with the
  same errno and so the same class (PermissionError, ...). Others unchanged."""
  name = error.filename
  if error.errno is None or not (
      name is None or os.path.basename(os.fsdecode(name)).startswith(_PREFIX)):
    return error
  return OSError(error.errno, error.strerror or os.strerror(error.errno), path)


def atomic_write(path: str, write: Callable[[IO], None], *, overwrite: bool = True,
                 binary: bool = True, hint: str = "overwrite=True") -> None:
  """Writes `path` through a temporary file in the same folder.

  A reader sees the old file or the whole new one. Whatever stops the write
  (an error, a full disk, KeyboardInterrupt) removes the temporary file, and an
  OS error names `path`, never the temporary file (a read-only folder gives
  "[Errno 30] Read-only file system: '<path>'").

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
  tmp = None
  try:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_PREFIX, suffix=os.path.basename(path))
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
  except OSError as e:
    named = _naming(e, path)
    if named is e:
      raise
    raise named from e
  finally:  # also on KeyboardInterrupt: no temporary file is left behind
    if tmp is not None and os.path.lexists(tmp):  # not renamed into place
      os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
  """Writes (or replaces) a text file atomically (see `atomic_write`)."""
  atomic_write(path, lambda f: f.write(text), binary=False)
