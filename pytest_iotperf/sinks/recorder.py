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
"""

from __future__ import annotations

from pytest_iotperf.header import WARMUP_PAYLOAD, MessageView, Telemetry
from pytest_iotperf.header_finders import ExtractError, FindHeaders, find_headers
from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger
from pytest_iotperf.wire_reports import SinkProgress, SinkReport


class SinkRecorder:
    """Accounting of one sink process for one run."""

    def __init__(self, run_id: str, timeline_slot_s: int = 1, find: FindHeaders = find_headers) -> None:
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
        delay_us = seen_at_us - telemetry.intended_at_us
        self.delay.record(delay_us)
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
            "first_seen_us": self.first_seen_us,
            "last_seen_us": self.last_seen_us,
            "drain": drain,
            "errors": errors if self.extract_problem is None else [*errors, self._extract_error_line()],
        }

    def _extract_error_line(self) -> str:
        return f"{self.extract_problem} ({self.extract_errors} message(s) not accounted)"
