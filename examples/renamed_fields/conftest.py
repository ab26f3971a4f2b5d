"""The platform of this example, and the hook that reads its renamed fields back.

``pytest_iotperf_extract`` runs in the plugin's sink process, not here: the
sink imports this file by path, so it keeps its imports light (the platform
itself is imported only by the fixture).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest


def pytest_iotperf_extract(body: bytes, properties: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The measurement header of one platform output: ``trace.run`` is ``run_id``, ``trace.n`` is ``seq``, ...

    None for anything else: the plugin's built-in finders then look (and count it malformed if they find nothing).
    """
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    trace = doc.get("trace") if isinstance(doc, dict) else None
    if not isinstance(trace, dict):
        return None
    return [
        {
            "run_id": trace.get("run"),
            "device_id": doc.get("device"),
            "seq": trace.get("n"),
            "intended_at": trace.get("due"),
            "sent_at": trace.get("sent"),
        }
    ]


@pytest.fixture
def platform() -> Iterator[Any]:
    """A renaming platform on its own embedded broker; ``platform.broker_url`` is where devices connect."""
    from pytest_iotperf.embedded.broker import EmbeddedBroker

    from .fake_platform import RenamingPlatform

    with EmbeddedBroker() as broker:
        endpoint = broker.endpoint
        running = RenamingPlatform(endpoint.host, endpoint.port).start()
        running.broker_url = f"mqtt://{endpoint.host}:{endpoint.port}"  # type: ignore[attr-defined]
        try:
            yield running
        finally:
            running.stop()
