"""What every sink does with a message it read back (pure: no client library, no pytest).

Delay is ``seen_at - intended_at`` (the schedule's due time, so a held-back
sender cannot hide latency); the seed's ``seen_at - sent_at`` is kept apart as
the sent delay.  Only the first arrival of a ``(device_id, seq)`` pair is
measured; later ones are duplicates.  Messages of other runs and payloads
that are not ours are counted and ignored.

Each message comes as a ``header.MessageView`` (body, topic, properties,
system properties); a ``HeaderDecoder`` finds its header (today: in the body).
"""

from __future__ import annotations

from pytest_iotperf.header import WARMUP_PAYLOAD, HeaderDecoder, MessageView, Telemetry, decode_body
from pytest_iotperf.metrics import DelayHistogram, DeliveryLedger
from pytest_iotperf.wire_reports import SinkProgress, SinkReport


class SinkRecorder:
    """Accounting of one sink process for one run."""

    def __init__(self, run_id: str, timeline_slot_s: int = 1, decode: HeaderDecoder = decode_body) -> None:
        self.run_id = run_id
        self._decode = decode
        self.ledger = DeliveryLedger()
        self.delay = DelayHistogram()
        self.sent_delay = DelayHistogram()
        self.timeline: dict[int, DelayHistogram] = {}
        self.arrivals = 0
        self.other_runs = 0
        self.malformed = 0
        self.warmups = 0
        self.per_minute: dict[int, dict[int, int]] = {}
        self.first_seen_us: int | None = None
        self.last_seen_us: int | None = None
        self._slot_s = timeline_slot_s
        self._slot_us = timeline_slot_s * 1_000_000

    @property
    def received(self) -> int:
        """Distinct messages of this run seen so far."""
        return self.ledger.received

    def record(self, message: MessageView, seen_at_us: int) -> Telemetry | None:
        """Account for one message as it arrived at ``seen_at_us`` (epoch microseconds).

        Returns the decoded telemetry when it counted as a new message of this run, else None.
        """
        self.arrivals += 1
        telemetry = self._decode(message)
        if telemetry is None:
            if message.body == WARMUP_PAYLOAD:
                self.warmups += 1
                return None
            self.malformed += 1
            return None
        if telemetry.run_id != self.run_id:
            self.other_runs += 1
            return None
        if not self.ledger.record(telemetry.device_id, telemetry.seq):
            return None
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
        return telemetry

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
            "errors": errors,
        }
