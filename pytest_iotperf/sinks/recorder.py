"""What every sink does with a message it read back (pure: no client library, no pytest).

Delay is ``seen_at - intended_at`` (the schedule's due time, so a held-back
sender cannot hide latency); the seed's ``seen_at - sent_at`` is kept apart as
the sent delay.  Only the first arrival of a ``(device_id, seq)`` pair is
measured; later ones are duplicates.  Messages of other runs and payloads
that are not ours are counted and ignored.

Each message comes as a ``header.MessageView`` (body, topic, properties,
system properties); a ``header_finders.HeaderFinder`` finds its headers: one,
or one per element of a batched output (a JSON array, JSON lines, what the
conftest hook returns).  ``arrivals`` counts messages; every header counts
like a message of its own.  A message without any header of ours is one
``malformed``; in a message that has some, each element without one is a
``malformed`` too, and ``batched`` counts the elements of messages that held
more than one.  A message the conftest hook raised on counts in
``extract_errors`` (the first error is kept for the report), nothing else.

By due time (issue 16): each new message is also counted in its due slot,
``(intended_at_us - t0_us) // due_slot_us`` (the grid of ``stage_plan``), a
delay histogram per slot whose count is the slot's ``received``.  T0 comes from
the parent (``{"cmd": "t0", "t0_us": N}``, :func:`t0_commands`) once the master
announced it; messages read before that are kept as (intended, delay) pairs and
folded in when it comes, by the recording thread (its next message) or by
:meth:`SinkRecorder.report`, so no lock is taken on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pytest_iotperf.header import WARMUP_PAYLOAD, MessageView, Telemetry
from pytest_iotperf.header_finders import ExtractError, FindHeaders, find_headers
from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger
from pytest_iotperf.wire_reports import DueSlotCounts, SinkProgress, SinkReport


class SinkRecorder:
    """Accounting of one sink process for one run."""

    def __init__(
        self, run_id: str, timeline_slot_s: int = 1, find: FindHeaders = find_headers, due_slot_us: int = 0
    ) -> None:
        self.run_id = run_id
        self._find = find
        self.ledger = DeliveryLedger()
        self.delay = DelayHistogram()
        self.sent_delay = DelayHistogram()
        self.timeline: dict[int, DelayHistogram] = {}
        self.arrivals = 0
        self.other_runs = 0
        self.malformed = 0
        self.warmups = 0
        self.batched = 0
        self.extract_errors = 0
        self.extract_problem: str | None = None  # the first ExtractError, for the report's errors
        self.per_minute: dict[int, dict[int, int]] = {}
        self.first_seen_us: int | None = None
        self.last_seen_us: int | None = None
        self._slot_s = timeline_slot_s
        self._slot_us = timeline_slot_s * 1_000_000
        # By due slot: the grid is the run's (spec "due_slot_us"); without one, the timeline's slot.
        self._due_slot_us = due_slot_us or self._slot_us
        self.by_due: dict[int, DelayHistogram] = {}
        self._t0_us: int | None = None  # T0 in use: set by the thread that records (or by report())
        self._announced_t0_us: int | None = None  # T0 as the parent announced it (any thread may set it)
        self._before_t0: list[tuple[int, int]] = []  # (intended_at_us, delay_us) of messages read before T0

    def set_t0(self, t0_us: int) -> None:
        """The run's T0 (epoch µs): from now on messages are accounted by due slot too.

        Callable from any thread: it only stores the value; what was kept before it is folded
        in by the recording thread at its next message, or by :meth:`report`.
        """
        self._announced_t0_us = int(t0_us)

    @property
    def received(self) -> int:
        """Distinct messages of this run seen so far."""
        return self.ledger.received

    def record(self, message: MessageView, seen_at_us: int) -> int:
        """Account for one message as it arrived at ``seen_at_us`` (epoch microseconds).

        Returns how many new messages of this run it carried (0 or 1, more for a batch).
        """
        self.arrivals += 1
        try:
            found = self._find(message)
        except ExtractError as exc:
            self.extract_errors += 1
            if self.extract_problem is None:
                self.extract_problem = str(exc)
            return 0
        if len(found) == 1:  # the common case: one header, or none
            telemetry = found[0]
            if telemetry is None:
                if message.body == WARMUP_PAYLOAD:
                    self.warmups += 1
                else:
                    self.malformed += 1
                return 0
            return self._account(telemetry, seen_at_us)
        ours = [telemetry for telemetry in found if telemetry is not None]
        if not ours:  # nothing of ours in it (an empty array, junk lines): one malformed message
            self.malformed += 1
            return 0
        self.batched += len(found)
        self.malformed += len(found) - len(ours)
        new = 0
        for telemetry in ours:
            new += self._account(telemetry, seen_at_us)
        return new

    def _account(self, telemetry: Telemetry, seen_at_us: int) -> int:
        """One header: 1 when it is a new message of this run, else 0 (another run's, a duplicate)."""
        if telemetry.run_id != self.run_id:
            self.other_runs += 1
            return 0
        if not self.ledger.record(telemetry.device_id, telemetry.seq):
            return 0
        intended_at_us = telemetry.intended_at_us
        delay_us = seen_at_us - intended_at_us
        self.delay.record(delay_us)
        t0_us = self._t0_us
        if t0_us is None:
            self._keep_until_t0(intended_at_us, delay_us)
        else:
            self._record_due(intended_at_us - t0_us, delay_us)
        self.sent_delay.record(seen_at_us - telemetry.sent_at_us)
        slot = seen_at_us // self._slot_us
        histogram = self.timeline.get(slot)
        if histogram is None:
            histogram = self.timeline[slot] = DelayHistogram()
        histogram.record(delay_us)
        # The seed's aggregate: per minute seen (receive or enqueue time) and whole-ms delay, a count.
        minute = seen_at_us // 60_000_000 * 60
        buckets = self.per_minute.get(minute)
        if buckets is None:
            buckets = self.per_minute[minute] = {}
        delay_ms = delay_us // 1000
        buckets[delay_ms] = buckets.get(delay_ms, 0) + 1
        if self.first_seen_us is None:
            self.first_seen_us = seen_at_us
        self.last_seen_us = seen_at_us
        return 1

    def _keep_until_t0(self, intended_at_us: int, delay_us: int) -> None:
        self._before_t0.append((intended_at_us, delay_us))
        if self._announced_t0_us is not None:
            self._fold_before_t0()

    def _fold_before_t0(self) -> None:
        """Account what was read before T0 was known, then use T0 (the recording thread, or report())."""
        t0_us = self._announced_t0_us
        assert t0_us is not None
        kept, self._before_t0 = self._before_t0, []
        for intended_at_us, delay_us in kept:
            self._record_due(intended_at_us - t0_us, delay_us)
        self._t0_us = t0_us

    def _record_due(self, due_offset_us: int, delay_us: int) -> None:
        """One new message in its due slot: one dict lookup and one histogram record."""
        due_slot = due_offset_us // self._due_slot_us
        by_due = self.by_due.get(due_slot)
        if by_due is None:
            by_due = self.by_due[due_slot] = DelayHistogram()
        by_due.record(delay_us)

    def by_due_report(self) -> dict[str, DueSlotCounts]:
        """``{str(slot): {"received", "delay"}}``; empty while T0 is unknown (what was read is kept)."""
        if self._t0_us is None and self._announced_t0_us is not None:
            self._fold_before_t0()  # no message came after T0 was announced
        return {
            str(slot): {"received": histogram.count, "delay": histogram.to_dict()}
            for slot, histogram in sorted(self.by_due.items())
        }

    def progress(self) -> SinkProgress:
        """The figures of a ``progress`` event: counts so far and the delay p95 (a bound the parent folds)."""
        delay = self.delay
        return {
            "received": self.ledger.received,
            "arrivals": self.arrivals,
            "p95_delay_ms": delay.percentile(95) / 1000.0 if delay.count else None,
            "gaps": self.ledger.gaps(),
        }

    def report(self, drain: str, errors: list[str]) -> SinkReport:
        """The sink's report: this accounting, how its drain ended (``sinks.drain``) and its errors."""
        return {
            "run_id": self.run_id,
            "received": self.ledger.received,
            "duplicates": self.ledger.duplicates,
            "out_of_order": self.ledger.out_of_order,
            "arrivals": self.arrivals,
            "other_runs": self.other_runs,
            "malformed": self.malformed,
            "warmups": self.warmups,
            "batched": self.batched,
            "extract_errors": self.extract_errors,
            "ledger": self.ledger.to_dict(),
            "delay": self.delay.to_dict(),
            "sent_delay": self.sent_delay.to_dict(),
            "timeline": {str(slot * self._slot_s): h.to_dict() for slot, h in sorted(self.timeline.items())},
            "per_minute": {
                str(minute): {str(ms): n for ms, n in sorted(buckets.items())}
                for minute, buckets in sorted(self.per_minute.items())
            },
            "by_due": self.by_due_report(),
            "first_seen_us": self.first_seen_us,
            "last_seen_us": self.last_seen_us,
            "drain": drain,
            "errors": errors if self.extract_problem is None else [*errors, self._extract_error_line()],
        }

    def _extract_error_line(self) -> str:
        return f"{self.extract_problem} ({self.extract_errors} message(s) not accounted)"


def t0_commands(commands: Iterable[dict[str, Any]], recorder: SinkRecorder) -> Iterator[dict[str, Any]]:
    """The sink's stdin commands with each ``{"cmd": "t0", "t0_us": N}`` applied to ``recorder`` and left out."""
    for command in commands:
        if command.get("cmd") == "t0":
            recorder.set_t0(int(command["t0_us"]))
        else:
            yield command
