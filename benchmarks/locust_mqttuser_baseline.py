"""Baseline for "Fleet at scale": how Locust's own ``MqttUser`` fares with N devices in ONE process.

    python benchmarks/locust_mqttuser_baseline.py --devices N [--qos 0|1] [--rate 1.0] [--duration 10]
        [--selectors] [--ramp S] [--connect-timeout S] [--timeout S] [--broker-host H --broker-port P]

Without ``--broker-host``/``--broker-port`` an embedded Mosquitto is started for the run.
Prints ONE JSON line: impl, devices, qos, rate, connected, scheduled, sent, failed,
lateness_p50_ms, lateness_p99_ms, lateness_max_ms, cpu_percent, rss_bytes_per_device, error
(plus a few diagnostic extras).  Other benchmark scripts import :func:`measure`.

What is measured
----------------
Each measurement runs in a fresh ``python`` child: importing locust monkey-patches the
stdlib with gevent, which this (parent) process must not suffer.  The child builds an
``Environment`` with one ``locust.contrib.mqtt.MqttUser`` subclass (``use_loop_selectors``
False by default, True with ``--selectors``), a local runner, and spawns N users at
N / ramp users/s.  ``MqttUser.__init__`` calls ``connect_async()`` and ``loop_start()`` for
every user, in BOTH modes (selectors only change how each client's loop waits on its
sockets); under gevent ``loop_start()``'s thread is a greenlet.

Once spawning is complete and the connected count stopped growing (or the connect timeout
passed) a steady-state window of ``--duration`` s starts at T0.  User i publishes message k
at ``T0 + phase_i + k / rate`` (phases spread evenly over one period; open model: nothing
waits for acknowledgements) through the normal ``self.client.publish(...)`` path, which is
what MqttUser users get by default: it fires one Locust ``request`` event per message
(from paho's on_publish callback, or at once on failure) into the runner's stats.

- scheduled: messages due in the window, for all N users, connected or not.
- sent / failed: ``publish()`` returned MQTT_ERR_SUCCESS / anything else (or raised).
  paho queues QoS 1 messages of a not-yet-connected client and returns success, so
  ``acked`` (on_publish callbacks during the window plus a short drain: QoS 0 written to
  the socket, QoS 1 PUBACKed) tells how many really went out.
- lateness: time a publish call started minus its due time, for every attempt.
- cpu_percent: ``time.process_time()`` delta over the window / window wall time.
- rss_bytes_per_device: (current RSS at the end of the window - RSS before spawning) / N.
- connected: distinct clients whose on_connect fired with success, by the end of the
  window; ``connected_at_end`` those still connected then.

The user subclass only swaps in a client subclass that counts connects, disconnects and
on_publish callbacks after calling MqttClient's own handlers; event firing is unchanged.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

IMPL = "locust-mqttuser"
IMPL_SELECTORS = "locust-mqttuser-selectors"
_DRAIN_S = 2.0
_STABLE_S = 2.0
_STDERR_TAIL_CHARS = 1500
_MAX_REASONS = 5

# Runs in the child: import locust first (gevent monkey-patching), then load this file as a
# module and run the measurement.
_CHILD_BOOT = """\
import sys
import locust  # noqa: F401  (monkey-patches the stdlib before anything else is imported)
import importlib.util
spec = importlib.util.spec_from_file_location("_locust_mqttuser_baseline_child", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module._child_main(sys.argv[2], sys.argv[3])
"""


def default_ramp_s(devices: int) -> float:
    """Spawn ramp: N users over max(1, N / 500) seconds."""
    return max(1.0, devices / 500.0)


def default_connect_timeout_s(devices: int) -> float:
    return 10.0 + devices / 100.0


def default_timeout_s(devices: int, duration_s: float, ramp_s: float, connect_timeout_s: float) -> float:
    """Hard limit on the child: ramp + connect wait + window + drain + generous slack."""
    return ramp_s + connect_timeout_s + duration_s + _DRAIN_S + 30.0 + devices / 200.0


def _base_result(devices: int, qos: int, rate: float, selectors: bool) -> dict[str, Any]:
    return {
        "impl": IMPL_SELECTORS if selectors else IMPL,
        "devices": devices,
        "qos": qos,
        "rate": rate,
        "connected": 0,
        "scheduled": 0,
        "sent": 0,
        "failed": 0,
        "lateness_p50_ms": None,
        "lateness_p99_ms": None,
        "lateness_max_ms": None,
        "cpu_percent": None,
        "rss_bytes_per_device": None,
        "error": None,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _rss_bytes() -> int:
    """Current resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _os_threads() -> int | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None


def _open_fds() -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd"))
    return None


def _raise_nofile() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _top(counter: collections.Counter[str]) -> dict[str, int]:
    return dict(counter.most_common(_MAX_REASONS))


# --------------------------------------------------------------------------------------------
# child side (gevent-patched, locust imported)
# --------------------------------------------------------------------------------------------


class _State:
    """Counters shared by all users of the child process (one OS thread: no locking)."""

    def __init__(self) -> None:
        self.connected_ids: set[str] = set()
        self.connect_failures: collections.Counter[str] = collections.Counter()
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.counting_acks = False
        self.acked = 0
        self.sent = 0
        self.failed = 0
        self.publish_errors: collections.Counter[str] = collections.Counter()
        self.task_errors: collections.Counter[str] = collections.Counter()
        self.lateness_s: list[float] = []
        self.users: list[Any] = []
        self.t0 = 0.0
        self.end = 0.0


def _child_main(config_json: str, result_path: str) -> None:
    """Entry point of the measurement child; writes its result as JSON to ``result_path``."""
    config: dict[str, Any] = json.loads(config_json)
    devices = int(config["devices"])
    qos = int(config["qos"])
    rate = float(config["rate"])
    selectors = bool(config["selectors"])
    result = _base_result(devices, qos, rate, selectors)
    try:
        result.update(_run_child(config))
    except BaseException as exc:  # report anything, then exit hard
        result["error"] = f"child failed: {type(exc).__name__}: {exc}"
    Path(result_path).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip tearing down N paho clients and their loop greenlets


def _run_child(config: dict[str, Any]) -> dict[str, Any]:
    nofile = _raise_nofile()
    import warnings

    # MqttClient uses paho's deprecated callback API version 1: keep that out of the output tail.
    warnings.filterwarnings("ignore", message="Callback API version 1 is deprecated", category=DeprecationWarning)

    import gevent
    import gevent.event
    import paho.mqtt.client as mqtt
    from locust import constant, task
    from locust.contrib.mqtt import MqttClient, MqttUser
    from locust.env import Environment

    devices = int(config["devices"])
    qos = int(config["qos"])
    rate = float(config["rate"])
    duration_s = float(config["duration_s"])
    selectors = bool(config["selectors"])
    ramp_s = float(config["ramp_s"])
    connect_timeout_s = float(config["connect_timeout_s"])
    host = str(config["host"])
    port = int(config["port"])

    state = _State()
    go = gevent.event.Event()
    period = 1.0 / rate
    success = mqtt.MQTT_ERR_SUCCESS

    class CountingClient(MqttClient):  # type: ignore[misc]
        """MqttClient that also counts connects, failed connection attempts, disconnects and on_publish."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.on_connect_fail = self._count_connect_fail

        def _count_connect_fail(self, client: Any, userdata: Any) -> None:
            state.connect_failures["socket/TCP connect failed (on_connect_fail)"] += 1

        def _on_connect_cb(self, client: Any, userdata: Any, flags: Any, rc: Any) -> None:
            super()._on_connect_cb(client, userdata, flags, rc)
            if rc == 0:
                state.connected_ids.add(self.client_id)
            else:
                state.connect_failures[str(rc)] += 1

        def _on_disconnect_cb(self, client: Any, userdata: Any, rc: Any) -> None:
            super()._on_disconnect_cb(client, userdata, rc)
            state.disconnects[str(rc)] += 1

        def _on_publish_cb(self, client: Any, userdata: Any, mid: int) -> None:
            super()._on_publish_cb(client, userdata, mid)
            if state.counting_acks:
                state.acked += 1

    next_index = iter(range(1 << 62))

    class BaselineUser(MqttUser):  # type: ignore[misc]
        abstract = True
        client_cls = CountingClient
        wait_time = constant(3600)

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            self.index = next(next_index)
            self.topic = f"bench/locust/{self.index}"
            self.done = False
            state.users.append(self)

        @task
        def run_schedule(self) -> None:
            if self.done:  # locust re-runs a task that raised: never replay the schedule
                gevent.sleep(3600)
                return
            self.done = True
            go.wait()
            start = state.t0 + ((self.index % devices) + 0.5) / devices * period
            client = self.client
            topic = self.topic
            k = 0
            due = start
            while due < state.end:
                now = time.time()
                if due > now:
                    gevent.sleep(due - now)
                    now = time.time()
                state.lateness_s.append(now - due)
                payload = f"{self.index},{k},{int(due * 1e6)},{int(now * 1e6)}".encode()
                try:
                    info = client.publish(topic, payload, qos=qos)
                except Exception as exc:
                    state.failed += 1
                    state.publish_errors[f"{type(exc).__name__}: {exc}"] += 1
                else:
                    if info.rc == success:
                        state.sent += 1
                    else:
                        state.failed += 1
                        state.publish_errors[mqtt.error_string(info.rc)] += 1
                k += 1
                due = start + k * period

    class PlainUser(BaselineUser):
        abstract = False
        use_loop_selectors = False

    class SelectorsUser(BaselineUser):
        abstract = False
        use_loop_selectors = True

    user_cls: Any = SelectorsUser if selectors else PlainUser
    user_cls.host = host
    user_cls.port = port

    environment = Environment(user_classes=[user_cls])

    def on_user_error(user_instance: Any, exception: BaseException, tb: Any, **_kwargs: Any) -> None:
        state.task_errors[f"{type(exception).__name__}: {exception}"] += 1

    environment.events.user_error.add_listener(on_user_error)  # type: ignore[no-untyped-call]
    runner = environment.create_local_runner()

    gevent.sleep(0.2)
    rss_baseline = _rss_bytes()
    spawn_started = time.monotonic()
    runner.start(devices, spawn_rate=devices / ramp_s)

    # Wait for the spawn to complete, then for the connected count to stop growing.
    deadline = spawn_started + ramp_s * 3 + 10.0 + connect_timeout_s
    while runner.spawning_greenlet is None or not runner.spawning_greenlet.ready():
        if time.monotonic() >= deadline:
            break
        gevent.sleep(0.1)
    spawned = runner.user_count
    spawn_s = time.monotonic() - spawn_started
    connect_deadline = time.monotonic() + connect_timeout_s
    last_count = -1
    last_change = time.monotonic()
    while time.monotonic() < connect_deadline:
        count = len(state.connected_ids)
        now_m = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now_m
        if count >= devices or now_m - last_change >= _STABLE_S:
            break
        gevent.sleep(0.1)
    connected_at_start = len(state.connected_ids)
    settle_s = time.monotonic() - spawn_started

    # Steady-state window.
    state.t0 = time.time() + 0.5
    state.end = state.t0 + duration_s
    # Every one of the N devices has a schedule, spawned/connected or not.
    scheduled = sum(
        max(0, math.ceil((duration_s - ((i % devices) + 0.5) / devices * period) * rate - 1e-9)) for i in range(devices)
    )
    go.set()
    gevent.sleep(max(0.0, state.t0 - time.time()))
    state.counting_acks = True
    cpu_start = time.process_time()
    wall_start = time.monotonic()
    gevent.sleep(max(0.0, state.end - time.time()))
    cpu_s = time.process_time() - cpu_start
    wall_s = time.monotonic() - wall_start
    rss_now = _rss_bytes()
    fds_now = _open_fds()
    threads_now = _os_threads()
    connected_at_end = sum(1 for user in state.users if user.client.is_connected())

    # Short drain: let the last messages go out / be acknowledged (not part of the window figures).
    drain_deadline = time.monotonic() + _DRAIN_S
    gevent.sleep(0.2)
    while time.monotonic() < drain_deadline and state.acked < state.sent:
        gevent.sleep(0.1)
    acked = state.acked

    import resource

    lateness = sorted(state.lateness_s)
    connected = len(state.connected_ids)
    out: dict[str, Any] = {
        "connected": connected,
        "scheduled": scheduled,
        "sent": state.sent,
        "failed": state.failed,
        "cpu_percent": round(100.0 * cpu_s / wall_s, 1) if wall_s > 0 else None,
        "rss_bytes_per_device": round((rss_now - rss_baseline) / devices) if devices else None,
        # diagnostic extras
        "spawned": spawned,
        "connected_at_start": connected_at_start,
        "connected_at_end": connected_at_end,
        "acked": acked,
        "attempts": len(lateness),
        "spawn_s": round(spawn_s, 2),
        "settle_s": round(settle_s, 2),
        "duration_s": round(wall_s, 3),
        "rss_baseline_bytes": rss_baseline,
        "rss_bytes": rss_now,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "open_fds": fds_now,
        "os_threads": threads_now,
        "nofile_limit": nofile,
        "locust_requests": environment.stats.total.num_requests,
        "locust_failures": environment.stats.total.num_failures,
        "connect_failures": _top(state.connect_failures),
        "disconnects": _top(state.disconnects),
        "publish_errors": _top(state.publish_errors),
        "task_errors": _top(state.task_errors),
    }
    if lateness:
        out["lateness_p50_ms"] = round(_percentile(lateness, 50) * 1000, 3)
        out["lateness_p99_ms"] = round(_percentile(lateness, 99) * 1000, 3)
        out["lateness_max_ms"] = round(lateness[-1] * 1000, 3)
    problems: list[str] = []
    if spawned < devices:
        problems.append(f"only {spawned}/{devices} users spawned in {spawn_s:.1f}s")
    if connected < devices:
        problems.append(f"only {connected}/{devices} clients connected")
    if state.task_errors:
        problems.append(f"{sum(state.task_errors.values())} task errors")
    if problems:
        out["error"] = "; ".join(problems)
    return out


# --------------------------------------------------------------------------------------------
# parent side (no locust, no gevent)
# --------------------------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip()
        return text[-_STDERR_TAIL_CHARS:]
    return ""


def measure(
    devices: int,
    qos: int = 0,
    rate: float = 1.0,
    duration_s: float = 10.0,
    selectors: bool = False,
    host: str = "127.0.0.1",
    port: int = 1883,
    timeout_s: float | None = None,
    *,
    ramp_s: float | None = None,
    connect_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Measure Locust's MqttUser with ``devices`` users in one fresh child process.

    Never raises for a failed measurement: a crashed, killed or timed-out child gives the
    result dict with ``error`` set.  ``timeout_s`` (default: derived from the sizes) is a hard
    limit after which the child's process group is killed.
    """
    result = _base_result(devices, qos, rate, selectors)
    if devices <= 0 or rate <= 0 or duration_s <= 0 or qos not in (0, 1, 2):
        result["error"] = "invalid arguments: devices, rate and duration must be > 0, qos 0, 1 or 2"
        return result
    ramp = default_ramp_s(devices) if ramp_s is None else ramp_s
    connect_timeout = default_connect_timeout_s(devices) if connect_timeout_s is None else connect_timeout_s
    hard_timeout = default_timeout_s(devices, duration_s, ramp, connect_timeout) if timeout_s is None else timeout_s
    config = {
        "devices": devices,
        "qos": qos,
        "rate": rate,
        "duration_s": duration_s,
        "selectors": selectors,
        "ramp_s": ramp,
        "connect_timeout_s": connect_timeout,
        "host": host,
        "port": port,
    }
    with tempfile.TemporaryDirectory(prefix="locust-mqttuser-") as tmp:
        result_path = Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            with open(stderr_path, "wb") as stderr:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _CHILD_BOOT,
                        str(Path(__file__).resolve()),
                        json.dumps(config),
                        str(result_path),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
                try:
                    returncode: int | None = proc.wait(timeout=hard_timeout)
                except subprocess.TimeoutExpired:
                    returncode = None
                finally:
                    _kill_group(proc)  # also reaps anything the child left behind
        except OSError as exc:
            result["error"] = f"could not start the child: {exc}"
            return result
        child: dict[str, Any] | None = None
        if result_path.exists():
            with contextlib.suppress(OSError, ValueError):
                child = json.loads(result_path.read_text())
        if child is not None:
            result.update(child)
            if returncode is None:
                result["error"] = (result["error"] + "; " if result["error"] else "") + "child hung after reporting"
            return result
        tail = _tail(stderr_path)
        if returncode is None:
            result["error"] = f"child killed after the {hard_timeout:.0f}s timeout"
        elif returncode < 0:
            result["error"] = f"child killed by signal {-returncode}"
        else:
            result["error"] = f"child exited with status {returncode} without a result"
        if tail:
            result["error"] += f"; output tail: {tail}"
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, required=True, help="number of MqttUser users (devices)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second per device")
    parser.add_argument("--duration", type=float, default=10.0, help="steady-state window, seconds")
    parser.add_argument("--selectors", action="store_true", help="MqttUser with use_loop_selectors=True")
    parser.add_argument("--ramp", type=float, default=None, help="spawn ramp seconds (default max(1, N/500))")
    parser.add_argument("--connect-timeout", type=float, default=None, help="max wait for connections, seconds")
    parser.add_argument("--timeout", type=float, default=None, help="hard limit on the child, seconds")
    parser.add_argument("--broker-host", default=None)
    parser.add_argument("--broker-port", type=int, default=None)
    args = parser.parse_args()
    if (args.broker_host is None) != (args.broker_port is None):
        parser.error("give both --broker-host and --broker-port, or neither")

    def run(host: str, port: int) -> dict[str, Any]:
        return measure(
            args.devices,
            args.qos,
            args.rate,
            args.duration,
            args.selectors,
            host,
            port,
            args.timeout,
            ramp_s=args.ramp,
            connect_timeout_s=args.connect_timeout,
        )

    if args.broker_host is not None:
        result = run(args.broker_host, args.broker_port)
    else:
        from pytest_iotperf.embedded.broker import EmbeddedBroker, raise_nofile_limit

        raise_nofile_limit()  # mosquitto inherits it: one descriptor per connection
        with EmbeddedBroker(prefer="mosquitto") as broker:
            result = run(broker.endpoint.host, broker.endpoint.port)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
