"""IoT Hub's identity registry over REST: create and delete devices in bulk, read one back.

``POST https://{host}/devices?api-version=2021-04-12`` with a JSON list of at most 100
``{"id", "importMode": "create" | "delete", ...}`` and ``GET /devices/{id}``, authorised by a SAS token
for ``sr={host}`` signed with a hub policy that may write the registry (``registryReadWrite``), ``skn`` =
that policy.

``HostName`` may carry a port (``127.0.0.1:8443``, the embedded hub's registry): the client connects to
that port, and the token is signed for the host without it, as the hub checks it.

Idempotent: creating a device that exists (``DeviceAlreadyExists``) and deleting one that does not
(``DeviceNotFound``) count as done, so a provisioning run that was interrupted can simply be run again.
Throttling (429) and a busy hub (500/502/503/504) are retried with backoff, honouring ``Retry-After``
up to a cap. Stdlib only (``http.client``); nothing here puts the key or the token in a message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

from pytest_iotperf.iothub.naming import API_VERSION
from pytest_iotperf.iothub.sas import make_sas_token
from pytest_iotperf.secrets import Scrubber

__all__ = [
    "MAX_BATCH",
    "DeviceFailure",
    "Mode",
    "ProgressCallback",
    "ProvisionResult",
    "RegistryClient",
    "RegistryError",
    "RetryPolicy",
    "provision",
    "split_host_port",
]

Mode = Literal["create", "delete"]
ProgressCallback = Callable[[int, int], None]  # (devices done, devices in all), after every call

#: IoT Hub takes at most 100 devices per bulk registry call.
MAX_BATCH: Final = 100
#: The error code that means "already so" for each mode: the device is counted as done.
_ALREADY: Final[dict[str, str]] = {"create": "DeviceAlreadyExists", "delete": "DeviceNotFound"}
_TRANSIENT_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_USER_AGENT: Final = "pytest-iotperf"


class RegistryError(Exception):
    """A registry call failed as a whole (refused credentials, unreachable, retries used up).

    The message names the host, the call and the status, never the key or the token.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a throttled or failed call: ``attempts`` in all, backoff doubling from ``first_s`` up to
    ``cap_s``; a ``Retry-After`` from the hub replaces the backoff (also capped at ``cap_s``)."""

    attempts: int = 8
    first_s: float = 0.5
    cap_s: float = 30.0

    def delay_s(self, retry: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.cap_s)
        backoff = min(self.first_s * 2.0**retry, self.cap_s)
        return backoff / 2 + random.uniform(0, backoff / 2)  # jitter: many provisioners do not retry in step


@dataclass(frozen=True)
class DeviceFailure:
    device_id: str
    error_code: str  # e.g. "DeviceInvalidId"
    error_status: str  # the hub's words


@dataclass(frozen=True)
class ProvisionResult:
    mode: Mode
    requested: int
    changed: int  # created (create) or deleted (delete) by this run
    unchanged: int  # already there (create) or already gone (delete)
    failures: tuple[DeviceFailure, ...] = ()
    calls: int = 0  # bulk calls that got an answer
    retries: int = 0  # calls repeated after a 429 / 5xx / dropped connection
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and self.changed + self.unchanged == self.requested

    def summary(self) -> str:
        verb, already = ("created", "already there") if self.mode == "create" else ("deleted", "already gone")
        rate = self.requested / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.requested} devices: {self.changed} {verb}, {self.unchanged} {already}, "
            f"{len(self.failures)} failed in {self.elapsed_s:.1f} s ({rate:.0f}/s; "
            f"{self.calls} calls, {self.retries} retries)"
        )


def split_host_port(hostname: str) -> tuple[str, int | None]:
    """``HostName`` -> (host the token is signed for, port or None): ``127.0.0.1:8443``, ``[::1]:8443``.

    Raises:
        ValueError: the port is not a number in 1..65535.
    """
    text = hostname.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        return text, None
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the host name {hostname!r} has a port that is not a number in 1..65535")
    return host, int(port_text)


@dataclass
class _Answer:
    status: int
    reason: str
    body: bytes
    retry_after_s: float | None


@dataclass
class _Counts:
    calls: int = 0
    retries: int = 0
    failures: list[DeviceFailure] = field(default_factory=list)


class RegistryClient:
    """One HTTPS connection to a hub's registry (kept alive across calls, reopened after an error)."""

    def __init__(
        self,
        hostname: str,
        policy: str,
        key: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        token_ttl_s: int = 3600,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host, port = split_host_port(hostname)
        self.port = port or 443
        self.url = f"https://{hostname.strip()}"
        self.policy = policy
        self._key = key
        self._context = ssl_context or ssl.create_default_context()
        self._timeout_s = timeout_s
        self.retry = retry
        self._token_ttl_s = token_ttl_s
        self._sleep = sleep
        self._connection: http.client.HTTPSConnection | None = None
        self.calls = 0
        self.retries = 0

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r}, policy={self.policy!r})"

    # -- calls --

    def bulk(self, device_ids: Sequence[str], mode: Mode) -> list[DeviceFailure]:
        """Create or delete ``device_ids`` (at most 100) in one call; returns the devices that failed.

        "Already so" answers (``DeviceAlreadyExists`` on create, ``DeviceNotFound`` on delete) are returned
        too, for the caller to count as done.

        Raises:
            RegistryError: the call as a whole failed.
        """
        if not 0 < len(device_ids) <= MAX_BATCH:
            raise ValueError(f"a bulk registry call takes 1..{MAX_BATCH} devices, got {len(device_ids)}")
        items: list[dict[str, Any]] = []
        for device_id in device_ids:
            item: dict[str, Any] = {"id": device_id, "importMode": mode}
            if mode == "create":
                item["authentication"] = {"type": "sas"}  # the hub generates the device's keys
            items.append(item)
        body = json.dumps(items).encode()
        answer = self._call("POST", f"/devices?api-version={API_VERSION}", body, what=f"{mode} devices")
        parsed = _json(answer.body)
        # The hub answers 200 when every device succeeded and 400 with the same shape when some failed.
        if answer.status in (200, 400) and isinstance(parsed, dict) and "isSuccessful" in parsed:
            return _failures(parsed, device_ids)
        raise self._error(answer, f"{mode} devices")

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        """The registry's record of ``device_id``, or None when it has none.

        Raises:
            RegistryError: the call failed.
        """
        path = f"/devices/{quote(device_id, safe='')}?api-version={API_VERSION}"
        answer = self._call("GET", path, None, what=f"read device {device_id!r}")
        if answer.status == 404:
            return None
        parsed = _json(answer.body)
        if answer.status == 200 and isinstance(parsed, dict):
            return parsed
        raise self._error(answer, f"read device {device_id!r}")

    # -- plumbing --

    def _token(self) -> str:
        return make_sas_token(self.host, self._key, int(time.time()) + self._token_ttl_s, self.policy)

    def _call(self, method: str, path: str, body: bytes | None, what: str) -> _Answer:
        """One request, repeated (up to the retry policy) while the hub throttles, is busy or drops the line."""
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                answer = self._send(method, path, body)
            except (ConnectionRefusedError, socket.gaierror, ssl.SSLCertVerificationError) as exc:  # no retry helps
                self.close()
                raise RegistryError(f"cannot reach {self.url} to {what}: {_describe(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, dropped keep-alive
                self.close()
                if last:
                    raise RegistryError(
                        f"{self.url} did not answer to {what} after {self.retry.attempts} attempts: {_describe(exc)}"
                    ) from None
                self.retries += 1
                self._sleep(self.retry.delay_s(attempt, None))
                continue
            self.calls += 1
            if answer.status not in _TRANSIENT_STATUS:
                return answer
            if last:
                raise RegistryError(
                    f"{self.url} still answered {answer.status} {answer.reason} to {what} after "
                    f"{self.retry.attempts} attempts (throttled: provision fewer devices at a time or retry later)",
                    answer.status,
                )
            self.retries += 1
            self._sleep(self.retry.delay_s(attempt, answer.retry_after_s))
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _send(self, method: str, path: str, body: bytes | None) -> _Answer:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self._timeout_s, context=self._context
            )
        headers = {
            "Authorization": self._token(),
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.will_close:
            self.close()
        return _Answer(response.status, response.reason, data, _retry_after_s(response.getheader("Retry-After")))

    def _error(self, answer: _Answer, what: str) -> RegistryError:
        said = Scrubber([self._key])(_server_message(answer.body))  # a hub may echo what it refused
        message = f"{self.url} answered {answer.status} {answer.reason} to {what}"
        if answer.status in (401, 403):
            message += (
                f" (the hub refused the SAS token of policy {self.policy!r}: check that the key is that policy's"
                " and that the policy may write the registry, e.g. registryReadWrite)"
            )
        return RegistryError(f"{message}: {said}" if said else message, answer.status)


def provision(
    host: str,
    policy: str,
    key: str,
    device_ids: Sequence[str],
    mode: Mode,
    ssl_context: ssl.SSLContext | None = None,
    progress: ProgressCallback | None = None,
    *,
    batch_size: int = MAX_BATCH,
    retry: RetryPolicy = RetryPolicy(),
    timeout_s: float = 30.0,
) -> ProvisionResult:
    """Create (``mode="create"``) or delete (``"delete"``) ``device_ids`` in a hub's registry, 100 per call.

    ``host`` is the connection string's ``HostName`` (a port allowed: ``127.0.0.1:8443``); ``policy`` and
    ``key`` a hub policy with registry write. ``progress(done, total)`` is called before the first call
    and after each. Devices the hub refuses are listed in the result (``ok`` is False); the rest go on.

    Raises:
        ValueError: ``device_ids`` repeats an id, or ``batch_size`` is not in 1..100.
        RegistryError: a call as a whole failed (refused credentials, unreachable, retries used up);
            what earlier calls did stays done (run again: it is idempotent).
    """
    if not 0 < batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")
    seen: set[str] = set()
    for device_id in device_ids:
        if device_id in seen:
            raise ValueError(f"the device id {device_id!r} is given twice")
        seen.add(device_id)
    total = len(device_ids)
    started = time.monotonic()
    changed = unchanged = 0
    failures: list[DeviceFailure] = []
    if progress is not None:
        progress(0, total)
    with RegistryClient(host, policy, key, ssl_context, timeout_s=timeout_s, retry=retry) as client:
        for start in range(0, total, batch_size):
            batch = device_ids[start : start + batch_size]
            answered = client.bulk(batch, mode)  # at most one entry per device of the batch
            already = [failure for failure in answered if failure.error_code == _ALREADY[mode]]
            failures.extend(failure for failure in answered if failure.error_code != _ALREADY[mode])
            unchanged += len(already)
            changed += len(batch) - len(answered)
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return ProvisionResult(
            mode=mode,
            requested=total,
            changed=changed,
            unchanged=unchanged,
            failures=tuple(failures),
            calls=client.calls,
            retries=client.retries,
            elapsed_s=time.monotonic() - started,
        )


# -- helpers --


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _failures(result: dict[str, Any], batch: Sequence[str]) -> list[DeviceFailure]:
    """The per-device errors of a bulk answer, one per device of the batch."""
    wanted = set(batch)
    failures: dict[str, DeviceFailure] = {}
    for error in result.get("errors") or ():
        if not isinstance(error, dict):
            continue
        device_id = str(error.get("deviceId", ""))
        if device_id in wanted and device_id not in failures:
            failures[device_id] = DeviceFailure(
                device_id, str(error.get("errorCode", "")), str(error.get("errorStatus", ""))[:300]
            )
    if not result.get("isSuccessful") and not failures:
        # Unsuccessful yet naming no device of ours: count the whole batch as failed rather than as done.
        said = "the hub reported a failure naming no device"
        return [DeviceFailure(device_id, "Unknown", said) for device_id in batch]
    return list(failures.values())


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After``: seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _server_message(body: bytes) -> str:
    parsed = _json(body)
    if isinstance(parsed, dict):
        for name in ("Message", "message", "ExceptionMessage"):
            if isinstance(parsed.get(name), str):
                return " ".join(str(parsed[name]).split())[:300]
    text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
