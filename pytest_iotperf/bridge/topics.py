"""Which device sent a message: from its topic, by the fleet's topic template, else from the payload.

The template is the one devices publish to, e.g. ``devices/{device_id}/telemetry``.
Each ``{name}`` placeholder stands for part of one topic level; ``{device_id}``
is captured, any other placeholder (``{run_id}``) matches anything.
"""

from __future__ import annotations

import json
import re
from typing import Final, Literal

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

KeySource = Literal["topic", "payload", "none"]


def template_pattern(template: str) -> re.Pattern[str]:
    """Compile a topic template into a regular expression with a ``device_id`` group.

    Raises:
        ValueError: the template has no ``{device_id}``, or has it twice.
    """
    if template.count("{device_id}") != 1:
        raise ValueError(f"topic template {template!r} must contain {{device_id}} exactly once")
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        # A placeholder never spans a topic level, so a device id cannot contain '/'.
        parts.append("(?P<device_id>[^/]+)" if match.group(1) == "device_id" else "[^/]+")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


class DeviceKeys:
    """Finds the partition key (the device id) of each forwarded message."""

    def __init__(self, topic_template: str) -> None:
        self._pattern = template_pattern(topic_template)

    def key_for(self, topic: str, payload: bytes) -> tuple[str | None, KeySource]:
        """The device id and where it came from; ``(None, "none")`` when neither topic nor payload names one."""
        match = self._pattern.fullmatch(topic)
        if match is not None:
            return match.group("device_id"), "topic"
        device_id = _payload_device_id(payload)
        if device_id is not None:
            return device_id, "payload"
        return None, "none"


def _payload_device_id(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(document, dict):
        device_id = document.get("device_id")
        if isinstance(device_id, str) and device_id:
            return device_id
    return None
