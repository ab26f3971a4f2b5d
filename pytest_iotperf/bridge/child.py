"""What every Event Hubs child process (the bridge, each sink) does before its own work.

``python -m ... SPEC_JSON REPORT_JSON``: die with the parent, route every log
record and event line through one secret scrubber, read the spec and take the
connection string from the environment.  A bad spec or environment is one
scrubbed ``error`` event and exit code 2, the same for every child.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pytest_iotperf.bridge.eventhub_access import EventHubConfigError, EventHubTarget, read_connection_string
from pytest_iotperf.child_protocol import EventWriter
from pytest_iotperf.process_guard import die_with_parent
from pytest_iotperf.secrets import Scrubber, describe_error, install_scrubbed_logging

SpecT = TypeVar("SpecT")

#: Exit code for a spec or environment the child cannot start from.
BAD_INPUT = 2


@dataclass(frozen=True)
class EventHubChild(Generic[SpecT]):
    """A child's validated inputs and its scrubbed outputs."""

    spec: SpecT
    report_path: Path
    connection_string: str
    target: EventHubTarget
    scrubber: Scrubber
    emit: EventWriter


def start_child(
    prog: str,
    description: str | None,
    role: str,
    parse_spec: Callable[[Any], SpecT],
    argv: list[str] | None = None,
) -> EventHubChild[SpecT] | int:
    """Set the child up; on bad input, report it (prefixed with ``role``) and return the exit code.

    ``parse_spec`` gets the decoded JSON and raises ValueError naming what is wrong.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("spec", type=Path, help="spec (JSON, no secrets)")
    parser.add_argument("report", type=Path, help="where to write the report (JSON)")
    args = parser.parse_args(argv)
    die_with_parent()
    scrubber = Scrubber()
    install_scrubbed_logging(scrubber)
    emit = EventWriter(scrub=scrubber)
    try:
        spec = parse_spec(json.loads(args.spec.read_text()))
        connection_string, target = read_connection_string(dict(os.environ), scrubber)
    except (OSError, ValueError, EventHubConfigError) as exc:
        emit("error", message=f"{role}: {describe_error(exc, scrubber)}")
        return BAD_INPUT
    return EventHubChild(spec, args.report, connection_string, target, scrubber, emit)
