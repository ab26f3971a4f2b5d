"""How a sink process finds the headers of its run: from its spec's ``message`` and ``extract`` fields."""

from __future__ import annotations

from typing import Any

from pytest_iotperf.extract_hook import load_extractors
from pytest_iotperf.header_finders import FindHeaders, HeaderFinder, find_headers
from pytest_iotperf.message_spec import MessageSpec


def finder_for(spec: dict[str, Any]) -> FindHeaders:
    """The run's header finder: its header key, and its conftest hooks imported in this process.

    Raises:
        ExtractLoadError: a hook's file does not import here (the message names it).
        ValueError: the spec's ``message`` is not a MessageSpec.
    """
    message = spec.get("message")
    header_path = MessageSpec.from_dict(message).header_path if message else ()
    extractors = load_extractors(spec.get("extract") or [])
    if not extractors and header_path in ((), find_headers.header_path):
        return find_headers  # the common case: nothing to build
    return HeaderFinder(header_path or find_headers.header_path, extractors)
