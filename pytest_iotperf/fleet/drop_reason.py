"""Why a device's connection dropped, in words that group well in ``disconnect_reasons``.

MQTT 3.1.1 has no DISCONNECT from the server: a broker (IoT Hub included)
just closes the connection, so the device side knows only how it ended.  Two
things make that readable: paho's catch-all "Unspecified error" becomes
"connection lost", and a drop at (or after) the moment the credentials expire
is put down to the expiry, which is what IoT Hub does then (error 401003).
A throttled IoT Hub first delays PUBACKs (``puback_latency``), then closes
connections: "connection closed by the broker", counted like any other drop.

Pure: imports neither locust nor gevent.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXPIRY_SLACK_S", "drop_reason"]

#: A drop this close before the expiry (or after it) is put down to the expiry: clocks differ a little.
EXPIRY_SLACK_S: Final = 1.0


def drop_reason(lost_reason: str | None, paho_reason: str, expires_at: float | None, now: float) -> str:
    """The reason counted for a drop: the client's own account if it has one, else paho's."""
    cause = lost_reason or paho_reason
    if cause == "Unspecified error":
        cause = "connection lost"
    if expires_at is not None and now >= expires_at - EXPIRY_SLACK_S:
        cause = f"{cause} at token expiry"
    return cause
