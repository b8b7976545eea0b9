"""Path spellings the tools and the library share (standard library only, so the
tools' usage errors stay instant)."""

from __future__ import annotations

import os
import re

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | os.PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return bool(_URI_RE.match(os.fspath(path)))
