"""Embedded MQTT broker: a mosquitto or amqtt child process on 127.0.0.1.

The broker is started on a free port with a generated configuration in a
private temporary directory, and is ready once a real MQTT client receives a
CONNACK from it.  Mosquitto is preferred: amqtt is pure Python and becomes the
bottleneck (and so distorts measured delays) well below the loads this plugin
is meant for.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pytest_iotperf.errors import BrokerError
from pytest_iotperf.mqtt_options import MqttClientOptions, configure_client
from pytest_iotperf.process_guard import raise_nofile_limit

__all__ = [
    "AMQTT_DISTORTION",
    "DEFAULT_PORTS",
    "BrokerEndpoint",
    "EmbeddedBroker",
    "amqtt_version",
    "find_mosquitto",
    "mosquitto_config",
    "mosquitto_version",
    "parse_broker_url",
    "raise_nofile_limit",
    "wait_for_mqtt",
]

DEFAULT_PORTS: Final[dict[str, int]] = {"mqtt": 1883, "mqtts": 8883}
"""Port used for each URL scheme when the URL names none."""

AMQTT_DISTORTION: Final = "which distorts delays above ~250 devices or ~2,000 msg/s"
"""Why amqtt is only a fallback; appended to the warnings about it."""

HOST: Final = "127.0.0.1"

_PREFERENCES: Final = ("auto", "mosquitto", "amqtt")
# Debian and Homebrew install the broker in an sbin directory, which a plain
# user's PATH often lacks.
_SBIN_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/opt/homebrew/sbin")
_BIND_RETRIES: Final = 3
_STOP_GRACE_S: Final = 5.0
_LOG_TAIL_LINES: Final = 20
_PROBE_ATTEMPT_S: Final = 2.0
_POLL_S: Final = 0.05
_MOSQUITTO_RUNNING: Final = re.compile(r"mosquitto version \S+ running")
_INSTALL_HINT: Final = "install mosquitto (`apt-get install mosquitto`, recommended) or amqtt (`pip install amqtt`)"


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the MQTT broker of a run listens, and what it is.

    Attributes:
        host: Host name or IP address clients connect to.
        port: TCP port.
        tls: Whether clients must use TLS (``mqtts``).
        kind: ``"mosquitto"``, ``"amqtt"`` (both embedded) or ``"external"``.
        description: Human-readable summary for reports, e.g.
            ``"mosquitto 2.0.11 (embedded)"``.
    """

    host: str
    port: int
    tls: bool
    kind: str
    description: str

    @property
    def url(self) -> str:
        """The broker as a URL, e.g. ``mqtt://127.0.0.1:41234``."""
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @classmethod
    def external(cls, url: str) -> BrokerEndpoint:
        """Build the endpoint of an external broker from its URL.

        Raises:
            ValueError: ``url`` is not ``mqtt://host[:port]`` or ``mqtts://host[:port]``.
        """
        scheme, host, port = parse_broker_url(url)
        tls = scheme == "mqtts"
        bare = cls(host=host, port=port, tls=tls, kind="external", description="")
        return cls(
            host=host,
            port=port,
            tls=tls,
            kind="external",
            description=f"{bare.url} (external)",
        )


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """Split ``mqtt://host:port`` or ``mqtts://host:port`` into (scheme, host, port).

    The port defaults to 1883 for ``mqtt`` and 8883 for ``mqtts``.  The error
    message never repeats credentials embedded in the URL.

    Raises:
        ValueError: the URL has another scheme, no host, a bad port, or
            credentials, a path, a query or a fragment.
    """
    shown = _redact_url(url)
    expected = "expected mqtt://host[:port] or mqtts://host[:port]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {shown!r}: {exc}; {expected}") from None
    if parts.scheme not in DEFAULT_PORTS:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"invalid broker URL {shown!r}: {got}; {expected}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"invalid broker URL {shown!r}: credentials in the URL are not supported "
            "(they would end up in logs and reports); remove them"
        )
    if not parts.hostname:
        raise ValueError(f"invalid broker URL {shown!r}: no host; {expected}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"invalid broker URL {shown!r}: unexpected path, query or fragment; {expected}")
    if port == 0:
        raise ValueError(f"invalid broker URL {shown!r}: port 0 is not usable; {expected}")
    return (
        parts.scheme,
        parts.hostname,
        port if port is not None else DEFAULT_PORTS[parts.scheme],
    )


def _redact_url(url: str) -> str:
    """Return ``url`` with any ``user:password@`` part replaced by ``***@``."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto executable, or None if it is not installed.

    Looks on PATH first, then in the sbin directories where packages install it.
    """
    found = shutil.which("mosquitto")
    if found is None:
        found = shutil.which("mosquitto", path=os.pathsep.join(_SBIN_DIRS))
    return found


def mosquitto_version(path: str) -> str | None:
    """Return the version of the mosquitto at ``path`` (e.g. ``"2.0.11"``), or None.

    Parses the first line of ``mosquitto -h``, ``mosquitto version 2.0.11``.
    """
    try:
        done = subprocess.run(
            [path, "-h"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=5.0,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^mosquitto version (\S+)", done.stdout + done.stderr, re.MULTILINE)
    return match.group(1) if match else None


def amqtt_version() -> str | None:
    """Return the installed amqtt version, or None if amqtt is not importable."""
    if importlib.util.find_spec("amqtt") is None:
        return None
    try:
        return importlib.metadata.version("amqtt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def wait_for_mqtt(
    host: str, port: int, timeout: float, *, tls: bool = False, options: MqttClientOptions | None = None
) -> None:
    """Connect an MQTT client to ``host:port``, wait for a successful CONNACK, disconnect.

    Args:
        host: Broker host.
        port: Broker port.
        timeout: Seconds for the whole exchange (TCP connect, TLS, CONNACK).
        tls: Connect with TLS, verifying the broker against the system CAs.
        options: TLS files and credentials, as the run's clients will use them (overrides ``tls``).

    Raises:
        BrokerError: naming ``host:port`` and what happened (refused, timed out,
            closed, or a failure reason code in the CONNACK).
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    deadline = time.monotonic() + timeout
    outcome: list[ReasonCode] = []

    def on_connect(
        _client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _props: Any,
    ) -> None:
        outcome.append(reason)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"iotperf-probe-{uuid.uuid4().hex[:12]}",
        clean_session=True,
    )
    client.on_connect = on_connect
    client.connect_timeout = max(timeout, 0.01)
    try:
        if options is not None:
            configure_client(client, options)
        elif tls:
            client.tls_set()
        try:
            client.connect(host, port, keepalive=max(5, int(timeout) + 5))
        except ConnectionRefusedError:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: connection refused "
                "(nothing is listening there). Check that the broker is running and the "
                "address is right."
            ) from None
        except TimeoutError:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: no TCP connection "
                f"within {timeout:.1f}s. Check the address and any firewall in between."
            ) from None
        except OSError as exc:
            raise BrokerError(
                f"Could not connect to the MQTT broker at {address}: {exc}. "
                "Check the address and that the broker is running."
            ) from None
        while not outcome:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"The MQTT broker at {address} accepted the TCP connection but sent no "
                    f"CONNACK within {timeout:.1f}s. Check that an MQTT broker (not another "
                    "service) listens there and that it is not overloaded."
                )
            rc = client.loop(timeout=min(remaining, 0.1))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not outcome:
                raise BrokerError(
                    f"The MQTT broker at {address} closed the connection before its CONNACK "
                    f"({mqtt.error_string(rc)}). Check the broker's log."
                )
        if outcome[0].is_failure:
            raise BrokerError(
                f"The MQTT broker at {address} refused the connection: {outcome[0]}. "
                "Check that it allows anonymous clients."
            )
    finally:
        # Sends DISCONNECT and closes the socket (no network thread is running);
        # a failure here must not hide the error being raised.
        with contextlib.suppress(OSError):
            client.disconnect()


def mosquitto_config(port: int, log_path: Path, *, run_as_root: bool = False) -> str:
    """Return the mosquitto 2.x configuration of an embedded load-test broker.

    Args:
        port: Port of the single listener, bound to 127.0.0.1.
        log_path: File the broker logs to.
        run_as_root: Keep root privileges (see below); set when running as root.
    """
    lines = [
        "# Generated by pytest-iotperf for one run; deleted when the broker stops.",
        f"listener {port} {HOST}",
        "max_connections -1",
        "allow_anonymous true",
        "persistence false",
        "set_tcp_nodelay true",
        # One sink subscribes to the whole fleet's traffic.  With the defaults
        # (20 in flight, 1000 queued) mosquitto silently drops QoS 0 messages
        # to a subscriber whose socket backs up and holds QoS 1/2 ones in a
        # bounded queue, hiding or distorting delays.  0 means unlimited for
        # both: a slow sink makes memory grow, visibly, instead.
        "max_inflight_messages 0",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        # Only concerns offline persistent sessions; a load-test disconnect
        # should show up as lost messages, not be papered over.
        "queue_qos0_messages false",
        f"log_dest file {log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # Adds only start/stop lines (not per client); "running" tells that
        # the listener is bound, which readiness relies on.
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if run_as_root:
        # As root mosquitto switches to user "mosquitto" before opening its log
        # file, which then cannot be created in our root-owned 0700 directory.
        lines.append("user root")
    return "\n".join(lines) + "\n"


def _amqtt_config(port: int) -> str:
    # JSON is valid YAML, so no YAML library is needed here.  Without the
    # BrokerSysPlugin there are no $SYS topics; without the packet/event
    # logger plugins nothing is logged per message.
    config = {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{HOST}:{port}", "max_connections": 0},
        },
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }
    return json.dumps(config, indent=2) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class _Backend:
    kind: str
    description: str
    executable: str


class _BindRace(Exception):
    """The port picked was taken before the broker could bind it."""


# Strong references: a broker dropped without stop() must still be stopped at exit.
_LIVE: set[EmbeddedBroker] = set()


def _stop_all() -> None:
    for broker in list(_LIVE):
        broker.stop()


atexit.register(_stop_all)


class EmbeddedBroker:
    """Starts an MQTT broker as a child process on 127.0.0.1 and a free port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedBroker() as broker:
            run_fleet(broker.endpoint.url)

    Attributes:
        warnings: Things the report should mention, e.g. that amqtt replaced
            a missing mosquitto.
    """

    def __init__(self, prefer: str = "auto", workdir: Path | None = None) -> None:
        """Configure, without starting, the broker.

        Args:
            prefer: ``"auto"`` (mosquitto if installed and working, else amqtt),
                ``"mosquitto"`` or ``"amqtt"`` (no fallback).
            workdir: Directory in which the broker's temporary directory
                (config and log) is created; the system default if None.

        Raises:
            ValueError: ``prefer`` is not one of the values above.
        """
        if prefer not in _PREFERENCES:
            raise ValueError(f"broker preference must be one of {', '.join(_PREFERENCES)}, not {prefer!r}")
        self.prefer = prefer
        self.workdir = workdir
        self.warnings: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._endpoint: BrokerEndpoint | None = None
        self._command: list[str] = []
        self._keep_tmpdir = False

    # -- public API ---------------------------------------------------------

    @property
    def endpoint(self) -> BrokerEndpoint:
        """Where the started broker listens.

        Raises:
            RuntimeError: the broker is not started.
        """
        if self._endpoint is None:
            raise RuntimeError("the embedded broker is not started; call start() first")
        return self._endpoint

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or None when it is not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is started and still alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def command(self) -> list[str]:
        """The command line of the last broker process launched."""
        return list(self._command)

    @property
    def log_path(self) -> Path | None:
        """The broker's log file while it is started (deleted by :meth:`stop`)."""
        return self._log_path

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the broker log ("" if there is none)."""
        return _log_tail(self._log_path, lines) if self._log_path is not None else ""

    def start(self, timeout: float = 15.0) -> BrokerEndpoint:
        """Start the broker and wait until it answers an MQTT CONNECT.

        Args:
            timeout: Seconds each broker tried gets to accept a connection.

        Returns:
            The endpoint clients connect to (also :attr:`endpoint`).

        Raises:
            BrokerError: no broker is installed, or none started in time; the
                message has the command, exit code and end of the broker log.
            RuntimeError: the broker is already started.
        """
        if self._proc is not None:
            raise RuntimeError("the embedded broker is already started; call stop() first")
        self.warnings.clear()
        raise_nofile_limit()
        backends = self._backends()
        failures: list[str] = []
        for index, backend in enumerate(backends):
            try:
                return self._start_backend(backend, timeout)
            except BrokerError as exc:
                failures.append(str(exc))
                if index + 1 < len(backends):
                    summary = str(exc).splitlines()[0].rstrip(".")
                    self.warnings.append(f"{summary}; using {backends[index + 1].kind} instead, " + AMQTT_DISTORTION)
        if len(failures) == 1:
            raise BrokerError(failures[0])
        raise BrokerError("No embedded MQTT broker could be started:\n\n" + "\n\n".join(failures))

    def stop(self) -> None:
        """Stop the broker and delete its temporary directory.

        Sends SIGTERM, waits a grace period, then kills.  Safe to call more
        than once, and when the broker never started.  The directory of a
        broker that failed to start is kept; the error message names it.
        """
        proc, self._proc = self._proc, None
        self._endpoint = None
        if proc is not None:
            _terminate(proc)
        _LIVE.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmpdir is not None and not self._keep_tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None
        self._keep_tmpdir = False
        self._log_path = None

    def __enter__(self) -> Self:
        """Start the broker (unless already started) and return self."""
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker, whether or not the body raised."""
        self.stop()

    def __repr__(self) -> str:
        state = self._endpoint.description if self._endpoint else "stopped"
        return f"<EmbeddedBroker prefer={self.prefer!r} {state} pid={self.pid}>"

    # -- internals ----------------------------------------------------------

    def _backends(self) -> list[_Backend]:
        mosquitto = find_mosquitto() if self.prefer in ("auto", "mosquitto") else None
        amqtt = amqtt_version() if self.prefer in ("auto", "amqtt") else None
        where = f"on PATH or in {', '.join(_SBIN_DIRS)}"
        backends: list[_Backend] = []
        if mosquitto is not None:
            version = mosquitto_version(mosquitto) or "(unknown version)"
            backends.append(_Backend("mosquitto", f"mosquitto {version} (embedded)", mosquitto))
        elif self.prefer == "mosquitto":
            raise BrokerError(
                f"The mosquitto broker was requested but is not installed (looked {where}). "
                "Install it with `apt-get install mosquitto`, or choose the amqtt broker."
            )
        if amqtt is not None:
            backends.append(_Backend("amqtt", f"amqtt {amqtt} (embedded)", sys.executable))
            if mosquitto is None:
                self.warnings.append(
                    "mosquitto not found on PATH; using amqtt, " + AMQTT_DISTORTION
                    if self.prefer == "auto"
                    else "amqtt was chosen as broker; it is pure Python, " + AMQTT_DISTORTION
                )
        elif self.prefer == "amqtt":
            raise BrokerError(
                f"The amqtt broker was requested but is not importable by {sys.executable}. "
                "Install it with `pip install amqtt`, or install mosquitto "
                "(`apt-get install mosquitto`)."
            )
        if not backends:
            raise BrokerError(
                f"No MQTT broker to embed: mosquitto is not installed (looked {where}) and "
                f"amqtt is not importable by {sys.executable}. To fix, {_INSTALL_HINT}, "
                "or point the plugin at an external broker."
            )
        return backends

    def _start_backend(self, backend: _Backend, timeout: float) -> BrokerEndpoint:
        deadline = time.monotonic() + timeout
        tmpdir = Path(tempfile.mkdtemp(prefix="iotperf-broker-", dir=self.workdir))
        self._tmpdir = tmpdir
        try:
            for _ in range(1 + _BIND_RETRIES):
                port = _free_port()
                try:
                    return self._launch(backend, tmpdir, port, deadline, timeout)
                except _BindRace:
                    continue
            raise BrokerError(
                f"{backend.description} could not bind a port on {HOST}: each of "
                f"{1 + _BIND_RETRIES} free ports picked was taken before the broker bound it. "
                "Another program is grabbing ports quickly; retry, or use an external broker."
            )
        except BaseException:
            self.stop()
            raise

    def _launch(
        self,
        backend: _Backend,
        tmpdir: Path,
        port: int,
        deadline: float,
        timeout: float,
    ) -> BrokerEndpoint:
        log_path = tmpdir / f"{backend.kind}.log"
        log_path.write_bytes(b"")
        env = dict(os.environ)
        if backend.kind == "mosquitto":
            config_path = tmpdir / "mosquitto.conf"
            config_path.write_text(
                mosquitto_config(port, log_path, run_as_root=_is_root()),
                encoding="utf-8",
            )
            command = [backend.executable, "-c", str(config_path)]
        else:
            config_path = tmpdir / "amqtt.yaml"
            config_path.write_text(_amqtt_config(port), encoding="utf-8")
            command = [
                backend.executable,
                "-m",
                "amqtt.scripts.broker_script",
                "-c",
                str(config_path),
            ]
            env["PYTHONUNBUFFERED"] = "1"
        self._command = command
        self._log_path = log_path
        if self._log_file is not None:
            self._log_file.close()
        # Append mode: mosquitto writes the same file through its own handle,
        # and without O_APPEND our stderr writes would overwrite its lines.
        self._log_file = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=self._log_file,
                cwd=tmpdir,
                env=env,
                # Like the run's other children: a terminal's Ctrl-C reaches
                # pytest only, which stops the broker after the run has drained.
                start_new_session=True,
            )
        except OSError as exc:
            raise BrokerError(
                f"Could not run {backend.description.replace(' (embedded)', '')}: {exc}.\n"
                f"  command: {shlex.join(command)}"
            ) from None
        self._proc = proc
        _LIVE.add(self)
        problem = self._await_ready(backend, proc, port, deadline, timeout)
        if problem is None:
            self._endpoint = BrokerEndpoint(
                host=HOST,
                port=port,
                tls=False,
                kind=backend.kind,
                description=backend.description,
            )
            return self._endpoint
        exit_code = proc.poll()
        self._proc = None
        _terminate(proc)
        log = _log_tail(log_path)
        if "address already in use" in log.lower():
            raise _BindRace
        # Kept so that the command in the message can be rerun by hand.
        self._keep_tmpdir = True
        raise BrokerError(self._failure_message(backend, port, problem, exit_code, log))

    def _await_ready(
        self,
        backend: _Backend,
        proc: subprocess.Popen[bytes],
        port: int,
        deadline: float,
        timeout: float,
    ) -> str | None:
        """Return None once the broker answers, else a description of what went wrong."""
        assert self._log_path is not None
        last_error = ""
        while True:
            if proc.poll() is not None:
                return "exited before accepting connections" + (f" ({last_error})" if last_error else "")
            # Until the broker logs that its listener is bound, whatever might
            # answer on the port is not it.  amqtt keeps running after its
            # listener failed, so its log is also the only sign of failure.
            log = _log_tail(self._log_path, 200)
            if backend.kind == "amqtt":
                if "Broker startup failed" in log:
                    return "failed to start its listener"
                bound = f"bind to {HOST}:{port}" in log
            else:
                # If it could not open its log file, the marker never comes:
                # fall back to the MQTT probe alone.
                bound = "Unable to open log file" in log or _MOSQUITTO_RUNNING.search(log) is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = last_error or "its log never said its listener was bound"
                return f"did not accept an MQTT connection within {timeout:g}s ({why})"
            if bound:
                try:
                    wait_for_mqtt(HOST, port, timeout=min(remaining, _PROBE_ATTEMPT_S))
                except BrokerError as exc:
                    last_error = str(exc)
                else:
                    if proc.poll() is None:
                        return None
                    continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0.001)))

    def _failure_message(
        self,
        backend: _Backend,
        port: int,
        problem: str,
        exit_code: int | None,
        log: str,
    ) -> str:
        name = backend.description.replace(" (embedded)", "")
        lines = [
            f"Embedded broker {name} on {HOST}:{port} {problem}.",
            f"  command: {shlex.join(self._command)}",
            f"  exit code: {exit_code if exit_code is not None else 'none (still running, killed)'}",
            "  last lines of its log:" if log else "  its log is empty",
        ]
        lines.extend(f"    {line}" for line in log.splitlines())
        assert self._log_path is not None
        lines.append(
            f"Its config and full log are kept in {self._log_path.parent}; run the command by hand "
            "to investigate, or "
            + ("choose the amqtt broker." if backend.kind == "mosquitto" else "install mosquitto.")
        )
        return "\n".join(lines)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc``: SIGTERM, a grace period, then SIGKILL; reap it in every case."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_STOP_GRACE_S)


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0
