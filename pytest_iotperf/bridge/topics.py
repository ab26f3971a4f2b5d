"""Which device sent a message: from its topic, by the fleet's topic template, else its header.

The template is the one devices publish to, e.g. ``devices/{device_id}/telemetry``.
Each ``{name}`` placeholder stands for part of one topic level; ``{device_id}``
is captured, any other placeholder (``{run_id}``) matches anything.  A fleet
may also share one topic (no ``{device_id}``): the device then comes from the
header, in the MQTT 5 user properties (``device_id``) or in the JSON body
(under the header key, or the flat form).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pytest_iotperf.message_spec import DEFAULT_HEADER_KEY

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

KeySource = Literal["topic", "properties", "payload", "none"]
#: Every KeySource, in the order they are tried: the keys of the forwarder's ``partition_key_from``.
KEY_SOURCES: Final[tuple[KeySource, ...]] = ("topic", "properties", "payload", "none")


def template_pattern(template: str) -> re.Pattern[str]:
    """Compile a topic template into a regular expression, with a ``device_id`` group when it names the device.

    Raises:
        ValueError: the template has ``{device_id}`` twice, or is a filter (``+``, ``#``) rather than a topic.
    """
    if template.count("{device_id}") > 1:
        raise ValueError(f"topic template {template!r} must contain {{device_id}} at most once")
    if "+" in template or "#" in template:
        raise ValueError(
            f"topic template {template!r} is a filter (+ or #), not a topic: name the device's part {{device_id}}, "
            "or give one topic for the whole fleet"
        )
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
    """Finds the partition key (the device id) of each forwarded message.

    Args:
        topic_template: the topic the devices publish to.
        header_path: where a JSON body holds the header (``MessageSpec.header_path``).
    """

    def __init__(self, topic_template: str, header_path: Sequence[str] = (DEFAULT_HEADER_KEY,)) -> None:
        pattern = template_pattern(topic_template)
        # One topic for the fleet names no device: skip the match for every message.
        self._pattern = pattern if "device_id" in pattern.groupindex else None
        self._header_path = tuple(header_path)

    def key_for(
        self, topic: str, payload: bytes, properties: Mapping[str, str] | None = None
    ) -> tuple[str | None, KeySource]:
        """The device id and where it came from; ``(None, "none")`` when neither topic nor header names one."""
        if self._pattern is not None:
            match = self._pattern.fullmatch(topic)
            if match is not None:
                return match.group("device_id"), "topic"
        if properties:
            device_id = properties.get("device_id")
            if device_id:
                return device_id, "properties"
        device_id = _payload_device_id(payload, self._header_path)
        if device_id is not None:
            return device_id, "payload"
        return None, "none"


def _payload_device_id(payload: bytes, header_path: tuple[str, ...]) -> str | None:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(document, dict):
        return None
    header: Any = document
    for key in header_path:
        header = header.get(key)
        if not isinstance(header, dict):
            header = document  # the flat form
            break
    device_id = header.get("device_id")
    if isinstance(device_id, str) and device_id:
        return device_id
    return None
