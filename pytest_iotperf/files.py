"""Writing files so that a reader never sees half of one.

Reports cross process boundaries as files: a child writes its report, the
parent reads it once the child said ``done`` (or died).  A plain write that
is interrupted leaves a truncated JSON document behind; a write to a
temporary file in the same directory followed by ``os.replace`` is atomic on
POSIX, so the reader sees the old file, no file, or the whole new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; parent directories are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two writers of the same path must not share one.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; reports are read by other users (CI artifacts)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomically(
    path: Path, document: Mapping[str, Any], *, indent: int | None = None, allow_nan: bool = True
) -> None:
    """Write ``document`` as JSON to ``path`` atomically (see :func:`write_text_atomically`)."""
    write_text_atomically(path, json.dumps(document, indent=indent, allow_nan=allow_nan))
