"""Root conftest: the plugin itself is loaded through its pytest11 entry point."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the iot_perf fixture runs a fleet (the examples do): mark it `fleet`.

    Tests that start a fleet another way (PerfRun, a pytester subprocess) carry the mark themselves.
    """
    for item in items:
        if "iot_perf" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fleet)
