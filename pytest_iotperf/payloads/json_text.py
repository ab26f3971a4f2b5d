"""The one way a payload's JSON is written: compact, UTF-8 as written (not \\u-escaped), no NaN."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["compact"]


def compact(value: Any) -> str:
    """``{"a":1,"b":[2,3]}``: no spaces; non-ASCII text kept as is; NaN and infinities refused (not JSON)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
