"""Atomic file writes: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import io
import os
import tempfile
from typing import IO, Callable

from flax_gradnet import paths


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
  """Writes `path` through a temporary file in the same folder (a URI such as
  gs://BUCKET/x: through `etils.epath`, in one upload).

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
  if paths.is_uri(path):
    _write_uri(path, write, overwrite=overwrite, binary=binary, exists_error=exists_error)
    return
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


def _write_uri(path: str, write: Callable[[IO], None], *, overwrite: bool, binary: bool,
               exists_error: FileExistsError) -> None:
  """A URI (gs://BUCKET/x) through `etils.epath`, never a local path: the content is
  made in memory and uploaded in one write, which object stores make visible whole
  or not at all. Without `overwrite` an existing object is refused (checked just
  before the write: object stores have no create-if-absent here)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  target = epath.Path(path)
  if not overwrite and target.exists():
    raise exists_error
  buf = io.BytesIO() if binary else io.StringIO()
  write(buf)
  target.parent.mkdir(parents=True, exist_ok=True)
  if binary:
    target.write_bytes(buf.getvalue())
  else:
    target.write_text(buf.getvalue())


def atomic_write_text(path: str, text: str) -> None:
  """Writes (or replaces) a text file atomically (see `atomic_write`)."""
  atomic_write(path, lambda f: f.write(text), binary=False)
