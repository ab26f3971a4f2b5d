"""The plugin's hooks, for conftest.py files and plugins (registered by ``plugin.pytest_addhooks``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_iotperf_extract(body: bytes, properties: dict[str, Any]) -> Iterable[Mapping[str, Any]] | None:
    """Find the measurement headers in a message the platform reshaped (renamed fields, an envelope, a batch).

    Called in the sink processes, not in pytest: for every message read back, before the built-in finders
    (JSON body under ``--iot-header-key`` or flat, JSON arrays, JSON lines, MQTT 5 user properties, Event Hubs
    application properties).  It must be a module-level function in a conftest.py or a plugin module: each
    sink imports that file by path (see ``pytest_iotperf.extract_hook``), so keep its imports light.

    :param body: the message body as read (bytes).
    :param properties: MQTT 5 user properties or Event Hubs application properties, str keys; bytes values
        decoded as UTF-8 (empty when the message has none).
    :return: None when the message is not one this hook understands (the built-in finders then look), else
        the headers it carries, one per reading: mappings with the fields ``run_id``, ``device_id``, ``seq``,
        ``intended_at`` and ``sent_at`` (ints, or strings of decimal digits; ``device_id`` may be left out on
        IoT Hub's endpoint, whose annotation names the sender), or ``pytest_iotperf.header.Telemetry``.  An
        element that is not a header counts as ``malformed``; an exception counts the message in
        ``extract_errors`` and the first one is reported among the run's errors.
    """
    raise NotImplementedError  # a hookspec: only its signature and docstring count
