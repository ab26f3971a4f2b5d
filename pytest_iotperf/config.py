"""Settings of a perf run: one description per setting, one precedence.

Every setting has a command-line option (``--iot-devices``), an ini key
(``iot_devices``) and an environment variable (``IOTPERF_DEVICES``), sharing
one help text.  Values resolve in this order, first hit wins:

    command line > environment > test code (``iot_perf.run(devices=...)``) > ini > default

The ini file holds project defaults; the command line and the environment
override them, and the test code, for one invocation.  Each resolved value
remembers where it came from, so a bad value is reported with its source and
the result records the provenance of every setting.

This module is pure: it knows nothing of pytest.  ``plugin.py`` feeds it the
raw strings it read from pytest's config.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pytest_iotperf.durations import parse_duration
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.mqtt_options import MqttClientOptions
from pytest_iotperf.secrets import (
    EVENTHUB_CONNECTION_STRING_ENV,
    INFLUX_TOKEN_ENV,
    IOTHUB_CONNECTION_STRING_ENV,
    IOTHUB_GROUP_KEY_ENV,
    MQTT_PASSWORD_ENV,
    redact_text,
)
from pytest_iotperf.setting_parsers import (
    choice,
    parse_bool,
    parse_broker,
    parse_consumer_group,
    parse_device_id_template,
    parse_directory,
    parse_eventhub,
    parse_file,
    parse_file_or_template,
    parse_header_key,
    parse_host_port,
    parse_http_url,
    parse_identity_template,
    parse_non_negative_int,
    parse_payload_file,
    parse_positive_duration,
    parse_positive_float,
    parse_positive_int,
    parse_properties,
    parse_qos,
    parse_ramp_up,
    parse_text,
    parse_topic_filter,
    parse_topic_template,
    parse_ws_path,
)
from pytest_iotperf.slo import Slo, merge_slos, parse_slo
from pytest_iotperf.stage_plan import (
    Stage,
    StageSpec,
    auto_ramp_s,
    due_slot_for,
    parse_stages,
    plan_stages,
    single_stage,
    timeline_slot_for,
)

_T = TypeVar("_T")

CLI = "command line"
ENV = "environment"
CODE = "test code"
INI = "ini"
DEFAULT = "default"


def default_workers() -> int:
    """One Locust worker per core but one (the master, sink and broker need a core too)."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class Setting:
    """One setting: its names in every source, its parser and its help text."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    run_kwarg: str | None = None  # the iot_perf.run() keyword, when test code may set it
    flag: bool = False  # a switch on the command line (no value); 'true'/'false' in env and ini
    repeatable: bool = False  # the option may be given several times (joined by newlines before parsing)

    @property
    def cli(self) -> str:
        return "--iot-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "iot_" + self.name

    @property
    def env(self) -> str:
        return "IOTPERF_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "devices", parse_positive_int, 10, "number of simulated MQTT devices (overrides the test code)", "N", "devices"
    ),
    Setting("rate", parse_positive_float, 1.0, "messages per second per device, e.g. 0.2", "R", "rate_per_device"),
    Setting(
        "duration", parse_positive_duration, 10.0, "steady-state publishing time, e.g. 30s or 2m", "D", "duration"
    ),
    Setting(
        "stages",
        parse_stages,
        None,
        "run in stages instead of one load: devices@duration, xR for a rate per device, e.g. "
        "'1000@1m,3000@2m,3000x2@1m' (test code: stages=[Stage('1m', devices=1000), ...]); "
        "the run's devices and duration come from them",
        "STAGES",
        "stages",
    ),
    Setting(
        "ramp_up",
        parse_ramp_up,
        None,
        "time over which devices connect, spread evenly (default auto: 1s per 500 devices, at least 0.25s)",
        "D",
        "ramp_up",
    ),
    Setting(
        "workers",
        parse_non_negative_int,
        None,
        "local Locust worker processes (default: cores - 1, at least 1; 0 with remote workers only)",
        "N",
        "workers",
    ),
    Setting(
        "broker",
        parse_broker,
        "embedded",
        "'embedded' (Mosquitto from PATH, else amqtt), 'embedded:iothub' (an embedded Azure IoT Hub), "
        "mqtt://host:port / mqtts://host:port, ws[s]://host:port/path (MQTT over WebSockets), "
        "or iothub://NAME.azure-devices.net (SAS tokens from "
        f"${IOTHUB_CONNECTION_STRING_ENV} or ${IOTHUB_GROUP_KEY_ENV})",
        "URL",
        "broker",
    ),
    Setting(
        "username",
        parse_identity_template,
        None,
        f"MQTT user name; may name the device: {{device_id}}, {{n}} (the password comes from ${MQTT_PASSWORD_ENV}, "
        "a template too)",
        "NAME",
        "username",
    ),
    Setting(
        "device_id",
        parse_device_id_template,
        "dev{n:06d}",
        "device id of device number n: {n} (with a format spec) and {run_id} are filled in",
        "TEMPLATE",
        None,
    ),
    Setting(
        "device_offset",
        parse_non_negative_int,
        0,
        "device numbers start here (two runs sharing a hub take disjoint ranges)",
        "K",
        None,
    ),
    Setting(
        "client_id",
        parse_identity_template,
        None,
        "MQTT client id template ({device_id}, {n}, {run_id}; default: the device id)",
        "TEMPLATE",
        None,
    ),
    Setting(
        "credentials",
        parse_file,
        None,
        "per-device credentials: CSV with a header (device_id,username,password[,cert,key]) or JSON lines; "
        "device k takes row k",
        "FILE",
        None,
    ),
    Setting(
        "sas_ttl",
        parse_positive_duration,
        3600.0,
        "IoT Hub: lifetime of each device's SAS token; longer runs renew it by reconnecting before it expires",
        "D",
        None,
    ),
    Setting(
        "property",
        parse_properties,
        (),
        "IoT Hub: a user property KEY=VALUE on every message (repeatable; ';' separates several in env and ini)",
        "KEY=VALUE",
        None,
        repeatable=True,
    ),
    Setting(
        "connect_rate",
        parse_positive_float,
        None,
        "at most N new connections per second, whole fleet (IoT Hub S1: max(100, 12 x units)); "
        "the auto ramp-up follows it",
        "N",
        "connect_rate",
    ),
    Setting("qos", parse_qos, 1, "MQTT QoS of the telemetry, 0 or 1", "{0,1}", "qos"),
    Setting(
        "payload_bytes",
        parse_non_negative_int,
        0,
        "pad each payload to this many bytes (0: no padding)",
        "N",
        "payload_bytes",
    ),
    Setting(
        "topic",
        parse_topic_template,
        "devices/{device_id}/telemetry",
        "publish topic template; {device_id} and {run_id} are filled in (without {device_id}: one topic for all)",
        "TEMPLATE",
        "topic",
    ),
    Setting(
        "arrival",
        choice("spread", "poisson", "aligned"),
        "spread",
        "when messages fall due: spread (each device every 1/rate, phases spread evenly), poisson "
        "(exponential gaps, seeded by --iot-seed) or aligned (every device at the same instants: the herd)",
        "{spread,poisson,aligned}",
        "arrival",
    ),
    Setting(
        "payload_file",
        parse_payload_file,
        None,
        'JSON template of each message, generators written as {"$uniform": [15, 30]} (test code: payload=...)',
        "FILE",
        "payload",
    ),
    Setting(
        "seed",
        parse_non_negative_int,
        None,
        "seed of the payload generators and of poisson arrivals (default: a new one per run, recorded in the result)",
        "N",
        "seed",
    ),
    Setting(
        "header",
        choice("body", "properties"),
        "body",
        "where the measurement header travels: inside the JSON body under --iot-header-key, or as "
        "MQTT 5 user properties / the IoT Hub property bag (the body stays byte-exact)",
        "{body,properties}",
        "header",
    ),
    Setting(
        "header_key",
        parse_header_key,
        "_iotperf",
        "key (or dotted path, e.g. meta.trace) of the header in a JSON body",
        "KEY",
        "header_key",
    ),
    Setting(
        "mqtt_version",
        choice("3.1.1", "5"),
        "3.1.1",
        "MQTT protocol version of the devices, the sink and the bridge",
        "{3.1.1,5}",
        "mqtt_version",
    ),
    Setting(
        "topic_alias",
        parse_bool,
        False,
        "MQTT 5: send the topic once per connection, then its alias",
        "",
        "topic_alias",
        flag=True,
    ),
    Setting(
        "transport",
        choice("tcp", "websockets"),
        "tcp",
        "how MQTT clients connect: tcp, or websockets (to --iot-ws-path)",
        "{tcp,websockets}",
        "transport",
    ),
    Setting(
        "ws_path",
        parse_ws_path,
        None,
        "path of the MQTT WebSocket endpoint (default /mqtt; IoT Hub: /$iothub/websocket)",
        "PATH",
        "ws_path",
    ),
    Setting(
        "sink",
        choice("mqtt", "eventhub"),
        "mqtt",
        "where telemetry is read back: an MQTT topic, or Event Hubs through the platform",
        "{mqtt,eventhub}",
        "sink",
    ),
    Setting(
        "sink_topic",
        parse_topic_filter,
        None,
        "topic filter the mqtt sink subscribes to (default: the filter matching --iot-topic)",
        "FILTER",
        "sink_topic",
    ),
    Setting(
        "drain",
        parse_duration,
        10.0,
        "how long the sink keeps reading after publishing stops (ends early once all sent arrived)",
        "D",
        "drain",
    ),
    Setting(
        "eventhub",
        parse_eventhub,
        "embedded",
        f"'embedded' (our Event Hubs-compatible endpoint) or a hub name, with ${EVENTHUB_CONNECTION_STRING_ENV}",
        "HUB",
        "eventhub",
    ),
    Setting(
        "consumer_group", parse_consumer_group, "$Default", "Event Hubs consumer group the sink reads", "NAME", None
    ),
    Setting(
        "eventhub_consumers",
        parse_positive_int,
        1,
        "Event Hubs sink processes; the hub's partitions are divided among them",
        "N",
        "eventhub_consumers",
    ),
    Setting(
        "eventhub_transport",
        choice("amqp", "websocket"),
        "amqp",
        "how the Event Hubs clients connect: amqp (5671) or websocket (443, for firewalled CI)",
        "{amqp,websocket}",
        None,
    ),
    Setting(
        "bridge",
        choice("embedded", "none"),
        "embedded",
        "with --iot-sink eventhub: 'embedded' forwards MQTT to Event Hubs (the IoT platform stand-in); "
        "'none' when a real platform does it",
        "{embedded,none}",
        "bridge",
    ),
    Setting(
        "master_bind",
        parse_host_port,
        ("127.0.0.1", 0),
        "where the Locust master listens for workers, e.g. 0.0.0.0:5557 for remote workers (port 0: any free port)",
        "HOST:PORT",
        None,
    ),
    Setting(
        "expect_workers",
        parse_positive_int,
        None,
        "Locust workers (local and remote together) the run waits for before it starts (default: --iot-workers)",
        "N",
        None,
    ),
    Setting(
        "clock_correction",
        parse_bool,
        False,
        "correct each worker's times by its clock offset to the master (measured NTP-style every run)",
        "",
        None,
        flag=True,
    ),
    Setting(
        "no_reconnect",
        parse_bool,
        False,
        "a device that loses its connection stays offline for the rest of the run (default: reconnect with backoff)",
        "",
        "no_reconnect",
        flag=True,
    ),
    Setting(
        "reconnect_max",
        parse_positive_duration,
        30.0,
        "longest wait between a device's reconnect attempts (jittered exponential backoff from ~100 ms)",
        "D",
        "reconnect_max",
    ),
    Setting(
        "offline_queue",
        parse_non_negative_int,
        1000,
        "messages a device keeps while offline and publishes after the reconnect; more are dropped_offline",
        "N",
        "offline_queue",
    ),
    Setting(
        "clean_session",
        parse_bool,
        True,
        "devices connect with a clean session; false keeps a persistent session (QoS 1 in-flight state survives)",
        "{true,false}",
        "clean_session",
    ),
    Setting(
        "outage_budget",
        parse_positive_duration,
        60.0,
        "abort the run when more than half the fleet has been offline longer than this",
        "D",
        "outage_budget",
    ),
    Setting(
        "allow_saturated",
        parse_bool,
        False,
        "do not fail a run whose generator was saturated (fleet lateness p99 over 50 ms)",
        "",
        "allow_saturated",
        flag=True,
    ),
    Setting("tls_ca", parse_file, None, "CA file that signed the broker's certificate (mqtts://)", "FILE", None),
    Setting(
        "tls_cert",
        parse_file_or_template,
        None,
        "client certificate for mutual TLS (with --iot-tls-key); per device: certs/{device_id}.pem",
        "FILE",
        None,
    ),
    Setting(
        "tls_key",
        parse_file_or_template,
        None,
        "private key of the client certificate; per device: certs/{device_id}.key",
        "FILE",
        None,
    ),
    Setting(
        "tls_insecure",
        parse_bool,
        False,
        "do not verify the broker's certificate and host name (only for test brokers)",
        "",
        None,
        flag=True,
    ),
    Setting(
        "influx_url",
        parse_http_url,
        None,
        f"export each run to InfluxDB v2 at URL (token from ${INFLUX_TOKEN_ENV})",
        "URL",
        None,
    ),
    Setting("influx_org", parse_text, "iotperf", "InfluxDB organization", "ORG", None),
    Setting("influx_bucket", parse_text, "iotperf", "InfluxDB bucket", "BUCKET", None),
    Setting(
        "report_dir",
        parse_directory,
        None,
        "write each perf test's result to DIR/<test id>.json and .html",
        "DIR",
        None,
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SETTINGS_BY_KWARG: dict[str, Setting] = {s.run_kwarg: s for s in SETTINGS if s.run_kwarg}


SLO_CLI = "--iot-slo"
SLO_INI = "iot_slo"
SLO_ENV = "IOTPERF_SLO"
SLO_HELP = (
    "an SLO every perf test must meet, e.g. 'p95_delay_ms < 800' (repeatable); "
    "overrides the test's own SLO on the same metric and direction"
)


@dataclass(frozen=True)
class SloSettings:
    """SLOs from outside the test code: ini defaults, and env/CLI overrides."""

    defaults: tuple[Slo, ...] = ()  # ini: project defaults, overridden by markers
    overrides: tuple[Slo, ...] = ()  # env then CLI: override the markers

    def for_test(self, marker_slos: tuple[Slo, ...]) -> list[Slo]:
        """ini < marker < env < command line, merged per metric and direction."""
        return merge_slos(merge_slos(self.defaults, marker_slos), self.overrides)


def resolve_slos(cli: list[str] | None, env: Mapping[str, str], ini: tuple[list[str], str] | None) -> SloSettings:
    """Parse SLO expressions from every source; a bad one names its source."""
    defaults: list[Slo] = []
    overrides: list[Slo] = []
    if ini is not None:
        lines, ini_name = ini
        defaults.extend(_parse_slo_from(text, f"{SLO_INI} line {text!r} (in {ini_name})") for text in lines)
    if SLO_ENV in env:
        for text in (part for part in env[SLO_ENV].split(";") if part.strip()):
            overrides.append(_parse_slo_from(text, f"{SLO_ENV} part {text!r} (environment)"))
    for text in cli or []:
        overrides.append(_parse_slo_from(text, f"{SLO_CLI}={text!r} (command line)"))
    return SloSettings(tuple(defaults), tuple(overrides))


def _parse_slo_from(text: str, where: str) -> Slo:
    try:
        return parse_slo(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def marker_slos(values: object, where: str) -> tuple[Slo, ...]:
    """The ``slo=`` of a ``perf`` marker: a string or a list of strings."""
    if values is None:
        return ()
    texts = [values] if isinstance(values, str) else values
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"{where}: slo= takes an expression or a list of expressions, got {values!r}")
    return tuple(_parse_slo_from(text, f"{where}: slo {text!r}") for text in texts)


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from (for messages and the result)."""

    value: Any
    source: str


@dataclass
class SessionSettings:
    """Settings resolved from CLI, env, ini and defaults, before test code is seen."""

    values: dict[str, Resolved] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def source(self, name: str) -> str:
        return self.values[name].source

    # Typed views of the settings the code reads; ``self["name"]`` stays for generic code
    # (describe(), sources()).  Each checks the type its parser makes, so a drift between
    # the table and a property fails loudly instead of flowing on as ``Any``.

    @property
    def broker(self) -> str:
        """``embedded``, ``embedded:mosquitto``, ``embedded:amqtt`` or an mqtt(s):// URL."""
        return self._typed("broker", str)

    @property
    def username(self) -> str | None:
        return self._optional("username", str)

    @property
    def qos(self) -> int:
        return self._typed("qos", int)

    @property
    def payload_bytes(self) -> int:
        return self._typed("payload_bytes", int)

    @property
    def topic_template(self) -> str:
        """The publish topic with ``{device_id}`` (and maybe ``{run_id}``) still to fill in."""
        return self._typed("topic", str)

    @property
    def sink(self) -> str:
        """``mqtt`` or ``eventhub``."""
        return self._typed("sink", str)

    @property
    def drain_s(self) -> float:
        return self._number("drain")

    @property
    def eventhub(self) -> str:
        """``embedded`` or the name of an Event Hub."""
        return self._typed("eventhub", str)

    @property
    def consumer_group(self) -> str:
        return self._typed("consumer_group", str)

    @property
    def eventhub_consumers(self) -> int:
        return self._typed("eventhub_consumers", int)

    @property
    def eventhub_transport(self) -> str:
        """``amqp`` or ``websocket``."""
        return self._typed("eventhub_transport", str)

    @property
    def bridge(self) -> str:
        """``embedded`` or ``none``."""
        return self._typed("bridge", str)

    @property
    def payload(self) -> object:
        """The payload asked for: None (our fixed JSON), a template file (Path), or from test code a dict
        template, a callable, or a ``"module:qualname"`` string (checked by ``run_message.plan_message``)."""
        return self["payload_file"]

    @property
    def arrival(self) -> str:
        """``spread``, ``poisson`` or ``aligned``."""
        return self._typed("arrival", str)

    @property
    def seed(self) -> int | None:
        """The payload generators' seed; None: a new one per run."""
        return self._optional("seed", int)

    @property
    def header(self) -> str:
        """``body`` or ``properties``."""
        return self._typed("header", str)

    @property
    def header_key(self) -> str:
        return self._typed("header_key", str)

    @property
    def mqtt_version(self) -> str:
        """``3.1.1`` or ``5``."""
        return self._typed("mqtt_version", str)

    @property
    def topic_alias(self) -> bool:
        return self._typed("topic_alias", bool)

    @property
    def transport(self) -> str:
        """``tcp`` or ``websockets``."""
        return self._typed("transport", str)

    @property
    def ws_path(self) -> str | None:
        """The WebSocket path asked for; None: the broker kind's default."""
        return self._optional("ws_path", str)

    @property
    def master_bind(self) -> tuple[str, int]:
        """(host, port) the Locust master binds; port 0: any free port."""
        host, port = self._typed("master_bind", tuple)
        return str(host), int(port)

    @property
    def clock_correction(self) -> bool:
        return self._typed("clock_correction", bool)

    @property
    def reconnect(self) -> bool:
        """Devices reconnect after an unexpected disconnect (``--iot-no-reconnect`` turns it off)."""
        return not self._typed("no_reconnect", bool)

    @property
    def reconnect_max_s(self) -> float:
        return self._number("reconnect_max")

    @property
    def offline_queue(self) -> int:
        return self._typed("offline_queue", int)

    @property
    def clean_session(self) -> bool:
        return self._typed("clean_session", bool)

    @property
    def outage_budget_s(self) -> float:
        return self._number("outage_budget")

    @property
    def allow_saturated(self) -> bool:
        return self._typed("allow_saturated", bool)

    @property
    def tls_ca(self) -> Path | None:
        return self._optional("tls_ca", Path)

    @property
    def tls_cert(self) -> str | None:
        """A certificate file, or a per-device template (``{device_id}``, ``{n}``)."""
        return self._optional("tls_cert", str)

    @property
    def tls_key(self) -> str | None:
        return self._optional("tls_key", str)

    @property
    def device_id_template(self) -> str:
        return self._typed("device_id", str)

    @property
    def device_offset(self) -> int:
        return self._typed("device_offset", int)

    @property
    def client_id_template(self) -> str | None:
        return self._optional("client_id", str)

    @property
    def credentials(self) -> Path | None:
        return self._optional("credentials", Path)

    @property
    def sas_ttl_s(self) -> float:
        return self._number("sas_ttl")

    @property
    def properties(self) -> tuple[tuple[str, str], ...]:
        """IoT Hub user properties of every message, in order."""
        return tuple(self._typed("property", tuple))

    @property
    def connect_rate(self) -> float | None:
        """New connections per second, whole fleet; None: as fast as the ramp spawns."""
        return None if self["connect_rate"] is None else self._number("connect_rate")

    @property
    def tls_insecure(self) -> bool:
        return self._typed("tls_insecure", bool)

    @property
    def influx_url(self) -> str | None:
        """The InfluxDB server root, or None when runs are not exported."""
        return self._optional("influx_url", str)

    @property
    def influx_org(self) -> str:
        return self._typed("influx_org", str)

    @property
    def influx_bucket(self) -> str:
        return self._typed("influx_bucket", str)

    @property
    def report_dir(self) -> Path | None:
        return self._optional("report_dir", Path)

    def _typed(self, name: str, kind: type[_T]) -> _T:
        value = self[name]
        if not isinstance(value, kind):
            raise TypeError(f"setting {name!r} holds {value!r}, not a {kind.__name__}")
        return value

    def _optional(self, name: str, kind: type[_T]) -> _T | None:
        return None if self[name] is None else self._typed(name, kind)

    def _number(self, name: str) -> float:
        value = self[name]
        # bool is an int too, but never a number of a setting
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"setting {name!r} holds {value!r}, not a number")
        return float(value)

    def for_run(self, code: Mapping[str, Any]) -> RunSettings:
        """Apply the keyword arguments of ``iot_perf.run()`` at their precedence."""
        unknown = sorted(set(code) - set(SETTINGS_BY_KWARG))
        if unknown:
            known = ", ".join(sorted(SETTINGS_BY_KWARG))
            raise ConfigError(f"iot_perf.run() got unknown keyword(s) {', '.join(unknown)}; known: {known}")
        values = dict(self.values)
        for kwarg, raw in code.items():
            setting = SETTINGS_BY_KWARG[kwarg]
            if raw is None:
                continue
            if kwarg == "stages" and not isinstance(raw, str):
                # A list of Stage (the text form is parsed below like any setting).
                if not isinstance(raw, (list, tuple)) or not all(isinstance(stage, Stage) for stage in raw):
                    raise ConfigError(
                        f"iot_perf.run(stages={raw!r}) (test code): expected a list of pytest_iotperf.Stage "
                        "or text such as '1000@1m,3000@2m'"
                    )
                if values[setting.name].source not in (CLI, ENV):
                    values[setting.name] = Resolved(tuple(raw), CODE)
                continue
            if kwarg == "payload" and isinstance(raw, str) and _CALLABLE_REF.fullmatch(raw.strip()):
                raw = _PayloadRef(raw.strip())  # "module:function": imported by the workers, by name
            if kwarg == "payload" and (isinstance(raw, _PayloadRef) or not isinstance(raw, (str, Path))):
                # A dict template, a callable or its name: not files; run_message.plan_message checks them.
                if not (isinstance(raw, (dict, _PayloadRef)) or callable(raw)):
                    raise ConfigError(
                        f"iot_perf.run(payload={raw!r}) (test code): expected a dict template, a callable, "
                        "a 'module:function' string or a template file"
                    )
                if values[setting.name].source not in (CLI, ENV):
                    values[setting.name] = Resolved(raw, CODE)
                continue
            # Checked even when the command line overrides it: a bad value in a
            # test must not hide until someone runs without the override.
            try:
                if isinstance(raw, bool):
                    value = raw if setting.parse is parse_bool else _reject_bool(raw)
                else:
                    value = setting.parse(str(raw))
            except ValueError as exc:
                # A URL with user:password@ is refused, but its message must not repeat the password.
                raise ConfigError(redact_text(f"iot_perf.run({kwarg}={raw!r}) (test code): {exc}")) from None
            if values[setting.name].source not in (CLI, ENV):
                values[setting.name] = Resolved(value, CODE)
        _refuse_size_beside_stages(values, code)
        settings = RunSettings(values)
        settings.check_stages()
        return settings


#: ``module.sub:function`` (a payload callable named by its import path).
_CALLABLE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class _PayloadRef(str):
    """A payload callable's ``module:qualname`` from test code (a str, told apart from a file path)."""

    __slots__ = ()


def describe_payload(payload: object) -> str | None:
    """How the payload setting reads in a result: None (fixed), the file, ``module:qualname`` or 'dict template'."""
    if payload is None or isinstance(payload, (str, Path)):
        return None if payload is None else str(payload)
    if isinstance(payload, dict):
        return "dict template (test code)"
    module = getattr(payload, "__module__", "?")
    return f"{module}:{getattr(payload, '__qualname__', repr(payload))}"


def _reject_bool(raw: bool) -> Any:
    raise ValueError(f"expected a value, got {raw!r}")


@dataclass
class RunSettings(SessionSettings):
    """Settings of one run, with every precedence applied."""

    def for_run(self, code: Mapping[str, Any]) -> RunSettings:
        raise TypeError("RunSettings are final")

    @property
    def devices(self) -> int:
        """Devices of the run; with stages, the most any stage has."""
        stages = self.stages
        if stages:
            return max(stage.devices for stage in stages)
        return self._typed("devices", int)

    @property
    def rate(self) -> float:
        """Messages per second per device (with stages: the default of a stage that names none)."""
        return self._number("rate")

    @property
    def duration_s(self) -> float:
        """Steady-state time; with stages, the sum of their durations."""
        if self.stages:
            return sum(stage.duration_s for stage in self.stage_plan)
        return self._number("duration")

    @property
    def ramp_up_s(self) -> float:
        """The first ramp: every device (with stages: the first stage's) connects over it before T0."""
        stages = self.stages
        if stages:
            return self.stage_plan[0].ramp_up_s
        return self._first_ramp_s(self._typed("devices", int))

    def _first_ramp_s(self, devices: int) -> float:
        if self["ramp_up"] is not None:
            return self._number("ramp_up")
        return auto_ramp_s(devices, self.connect_rate)

    @property
    def stages(self) -> tuple[Stage, ...] | None:
        """The stages asked for (``--iot-stages`` / ``stages=``); None: one constant load."""
        value = self["stages"]
        return None if value is None else tuple(self._typed("stages", tuple))

    @property
    def stage_plan(self) -> tuple[StageSpec, ...]:
        """The run's stages resolved (starts, rates, ramps); a run without stages is one stage.

        Raises:
            ValueError: a stage that cannot run, naming it (``check_stages`` turns it into a ConfigError).
        """
        stages = self.stages
        if not stages:
            return single_stage(self._typed("devices", int), self.rate, self._number("duration"), self.ramp_up_s)
        return plan_stages(
            stages,
            rate=self.rate,
            first_ramp_up_s=self._first_ramp_s(stages[0].devices),  # a stage's own ramp_up wins
            connect_rate=self.connect_rate,
        )

    @property
    def planned_messages(self) -> int:
        """Messages the run plans to send: devices x rate x duration, summed over the stages."""
        return math.ceil(sum(stage.devices * stage.rate * stage.duration_s for stage in self.stage_plan))

    def check_stages(self) -> None:
        """Refuse stages that cannot run, naming the stage and where the stages came from.

        Raises:
            ConfigError: a stage's values, or boundaries off the 100 ms due-time grid.
        """
        if not self.stages:
            return
        where = _where(SETTINGS_BY_NAME["stages"], self.values["stages"])
        try:
            plan = self.stage_plan
            duration_s = sum(stage.duration_s for stage in plan)
            due_slot_for((stage.start_s for stage in plan), duration_s, timeline_slot_for(duration_s))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @property
    def workers(self) -> int:
        explicit = self._optional("workers", int)
        return explicit if explicit is not None else default_workers()

    @property
    def expect_workers(self) -> int:
        explicit = self._optional("expect_workers", int)
        return explicit if explicit is not None else max(self.workers, 1)

    @property
    def sink_topic(self) -> str:
        explicit = self._optional("sink_topic", str)
        if explicit is not None:
            return explicit
        return topic_filter_for(self.topic_template)

    @property
    def per_device_tls(self) -> bool:
        """``--iot-tls-cert`` / ``--iot-tls-key`` are per-device templates (``certs/{device_id}.pem``)."""
        return any("{" in (value or "") for value in (self.tls_cert, self.tls_key))

    def mqtt_options(self) -> MqttClientOptions:
        """TLS files and user name of this run's MQTT clients (whether TLS is on comes from the broker URL)."""
        # A per-device certificate template is the identity's (one context per certificate), not the connection's.
        cert, key = self.tls_cert, self.tls_key
        per_device = self.per_device_tls
        return MqttClientOptions(
            ca_file=_str_or_none(self.tls_ca),
            cert_file=None if per_device else cert,
            key_file=None if per_device else key,
            insecure=self.tls_insecure,
            username=self.username,
        )

    def sources(self) -> dict[str, str]:
        return {name: resolved.source for name, resolved in self.values.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-friendly values of every setting (no secrets live in settings)."""
        out: dict[str, Any] = {}
        for name, resolved in self.values.items():
            value = resolved.value
            out[name] = str(value) if isinstance(value, Path) else value
        out["payload_file"] = describe_payload(self.payload)
        stages = self.stages
        out["stages"] = None if not stages else ",".join(str(stage) for stage in stages)
        if stages:  # what the stages make of them
            out["devices"] = self.devices
            out["duration"] = self.duration_s
        out["ramp_up"] = self.ramp_up_s
        out["workers"] = self.workers
        out["expect_workers"] = self.expect_workers
        host, port = self.master_bind
        out["master_bind"] = f"{host}:{port}"
        out["sink_topic"] = self.sink_topic
        return out


#: A source's rank: a value from a higher one overrides a lower one's.
_PRECEDENCE = {CLI: 4, ENV: 3, CODE: 2, INI: 1, DEFAULT: 0}


def _where(setting: Setting, resolved: Resolved) -> str:
    """How an error names a setting's value by its source: ``--iot-stages (command line)``."""
    if resolved.source == CLI:
        return f"{setting.cli} (command line)"
    if resolved.source == ENV:
        return f"{setting.env} (environment)"
    if resolved.source == CODE:
        return f"iot_perf.run({setting.run_kwarg}=...) (test code)"
    if resolved.source == INI:
        return f"{setting.ini} (ini)"
    return f"{setting.name} (default)"


def _refuse_size_beside_stages(values: Mapping[str, Resolved], code: Mapping[str, Any] | None = None) -> None:
    """Stages set the devices and the duration: one given as well, from the same or a higher source, is refused.

    (A lower source's value, an ini default say, simply gives way to the stages.)  Test code giving both in one
    call is refused even when the command line overrides one of them: that call is wrong wherever it runs.
    """
    stages = values.get("stages")
    if stages is None or stages.value is None:
        return
    code = code or {}
    for name in ("devices", "duration"):
        other = values[name]
        setting = SETTINGS_BY_NAME[name]
        same_call = code.get(setting.run_kwarg or "") is not None and code.get("stages") is not None
        if same_call or (other.source != DEFAULT and _PRECEDENCE[other.source] >= _PRECEDENCE[stages.source]):
            stages_where = _where(SETTINGS_BY_NAME["stages"], stages)
            other_where = _where(setting, Resolved(other.value, CODE) if same_call else other)
            raise ConfigError(
                f"{stages_where} and {other_where} both set the run's {name}: with stages, the devices and the "
                f"duration come from the stages; drop {other_where.split(' (')[0]} or the stages"
            )



def _str_or_none(value: object) -> str | None:
    return str(value) if value is not None else None


def topic_filter_for(template: str, run_id: str = "{run_id}") -> str:
    """The subscription filter matching a publish template: ``{device_id}`` becomes ``+``.

    ``{run_id}`` stays a placeholder until the run fills it in, so each run reads only its own topic.
    """
    return template.replace("{device_id}", "+").replace("{run_id}", run_id)


def resolve(
    cli: Mapping[str, str | None],
    env: Mapping[str, str],
    ini: Mapping[str, tuple[str, str] | None],
) -> SessionSettings:
    """Resolve every setting from raw strings.

    ``cli`` maps setting name -> raw CLI value (None when not given), ``env`` is
    the process environment, ``ini`` maps setting name -> (raw value, ini file
    name) or None.  Raises :class:`ConfigError` naming the value and its source.
    """
    values: dict[str, Resolved] = {}
    for setting in SETTINGS:
        raw_cli = cli.get(setting.name)
        raw_ini = ini.get(setting.name)
        if raw_cli is not None:
            where, raw = f"{setting.cli}={raw_cli} (command line)", raw_cli
            source = CLI
        elif setting.env in env:
            raw = env[setting.env]
            where, source = f"{setting.env}={raw!r} (environment)", ENV
        elif raw_ini is not None:
            raw, ini_name = raw_ini
            where, source = f"{setting.ini} = {raw} (in {ini_name})", INI
        else:
            values[setting.name] = Resolved(setting.default, DEFAULT)
            continue
        try:
            values[setting.name] = Resolved(setting.parse(raw), source)
        except ValueError as exc:
            raise ConfigError(redact_text(f"{where}: {exc}")) from None
    _refuse_size_beside_stages(values)
    return SessionSettings(values)
