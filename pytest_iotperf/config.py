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
from typing import Any

from pytest_iotperf.errors import ConfigError
from pytest_iotperf.mqtt_options import MQTT_PASSWORD_ENV, MqttClientOptions
from pytest_iotperf.slo import Slo, merge_slos, parse_slo

CLI = "command line"
ENV = "environment"
CODE = "test code"
INI = "ini"
DEFAULT = "default"


#: Environment variable holding the InfluxDB token (a secret: no CLI option, no ini key).
INFLUX_TOKEN_ENV = "IOTPERF_INFLUX_TOKEN"

#: Environment variable holding the Event Hubs connection string (it carries the SAS key).
EVENTHUB_CONNECTION_STRING_ENV = "IOTPERF_EVENTHUB_CONNECTION_STRING"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse ``30s``, ``2m``, ``1m30s``, ``500ms``, ``1.5h`` or a bare number of seconds."""
    raw = text.strip()
    if not raw:
        raise ValueError("expected a duration such as 30s, 2m or 1m30s, got an empty value")
    try:
        seconds = float(raw)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos and raw[pos : match.start()].strip():
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
            pos = match.end()
        if pos == 0 or raw[pos:].strip():
            raise ValueError(f"expected a duration such as 30s, 2m, 1m30s or 500ms, got {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for display (``90`` -> ``1m30s``)."""
    if seconds < 1 and seconds > 0:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes and rest:
        return f"{int(minutes)}m{rest:g}s"
    if minutes:
        return f"{int(minutes)}m"
    return f"{rest:g}s"


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number greater than 0, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a whole number greater than 0, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number greater than 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a number greater than 0, got {text!r}")
    return value


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than 0, got {text!r}")
    return seconds


def _ramp_up(text: str) -> float | None:
    """``auto`` (None) lets the run pick a ramp from the device count."""
    if text.strip().lower() == "auto":
        return None
    return parse_duration(text)


def _qos(text: str) -> int:
    if text.strip() not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text!r}")
    return int(text.strip())


def _broker(text: str) -> str:
    value = text.strip()
    if value == "embedded" or value in ("embedded:mosquitto", "embedded:amqtt"):
        return value
    match = re.fullmatch(r"(mqtts?)://([^/:@\s]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?/?", value)
    if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
        raise ValueError(f"expected 'embedded' or a URL like mqtt://host:1883 or mqtts://host:8883, got {text!r}")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(repr(c) for c in choices)}, got {text!r}")
        return value

    return parse


_sink = _choice("mqtt", "eventhub")


def _eventhub(text: str) -> str:
    value = text.strip()
    if value == "embedded":
        return value
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}", value):
        raise ValueError(
            f"expected 'embedded' or an Event Hub name (the connection string comes from "
            f"${EVENTHUB_CONNECTION_STRING_ENV}), got {text!r}"
        )
    return value


def _consumer_group(text: str) -> str:
    value = text.strip()
    if not value or len(value) > 50:
        raise ValueError(f"expected a consumer group name such as $Default, got {text!r}")
    return value


def _topic_template(text: str) -> str:
    value = text.strip()
    if "{device_id}" not in value:
        raise ValueError(f"the topic must contain {{device_id}}, got {text!r}")
    if "#" in value or "+" in value:
        raise ValueError(f"a publish topic cannot contain the wildcards + or #, got {text!r}")
    try:
        value.format(device_id="d", run_id="r")
    except (KeyError, IndexError, ValueError):
        raise ValueError(
            f"the topic may only use the placeholders {{device_id}} and {{run_id}}, got {text!r}"
        ) from None
    return value


def _topic_filter(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("expected an MQTT topic filter such as devices/+/telemetry, got an empty value")
    levels = value.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            raise ValueError(f"{text!r} is not a valid MQTT topic filter")
    return value


def _text(text: str) -> str:
    return text.strip()


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 0.0.0.0:5557, got {text!r}")
    return host.strip("[]"), int(port)


def _http_url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/@]+(:\d{1,5})?", value):
        raise ValueError(f"expected the server root such as http://localhost:8086, got {text!r}")
    return value


def _file(text: str) -> Path:
    path = Path(text.strip()).expanduser()
    if not text.strip() or not path.is_file():
        raise ValueError(f"expected a readable file, got {text!r}")
    return path


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("expected a directory path, got an empty value")
    return Path(text.strip())


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
    Setting("devices", _positive_int, 10, "number of simulated MQTT devices (overrides the test code)", "N", "devices"),
    Setting("rate", _positive_float, 1.0, "messages per second per device, e.g. 0.2", "R", "rate_per_device"),
    Setting("duration", _positive_duration, 10.0, "steady-state publishing time, e.g. 30s or 2m", "D", "duration"),
    Setting(
        "ramp_up",
        _ramp_up,
        None,
        "time over which devices connect, spread evenly (default auto: 1s per 500 devices, at least 1s)",
        "D",
        "ramp_up",
    ),
    Setting(
        "workers",
        _non_negative_int,
        None,
        "local Locust worker processes (default: cores - 1, at least 1; 0 with remote workers only)",
        "N",
        "workers",
    ),
    Setting(
        "broker",
        _broker,
        "embedded",
        "'embedded' (Mosquitto from PATH, else amqtt) or mqtt://host:port / mqtts://host:port",
        "URL",
        "broker",
    ),
    Setting(
        "username", _text, None, f"MQTT user name (the password comes from ${MQTT_PASSWORD_ENV})", "NAME", "username"
    ),
    Setting("qos", _qos, 1, "MQTT QoS of the telemetry, 0 or 1", "{0,1}", "qos"),
    Setting(
        "payload_bytes",
        _non_negative_int,
        0,
        "pad each payload to this many bytes (0: no padding)",
        "N",
        "payload_bytes",
    ),
    Setting(
        "topic",
        _topic_template,
        "devices/{device_id}/telemetry",
        "publish topic template; {device_id} and {run_id} are filled in",
        "TEMPLATE",
        "topic",
    ),
    Setting(
        "sink",
        _sink,
        "mqtt",
        "where telemetry is read back: an MQTT topic, or Event Hubs through the platform",
        "{mqtt,eventhub}",
        "sink",
    ),
    Setting(
        "sink_topic",
        _topic_filter,
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
        _eventhub,
        "embedded",
        f"'embedded' (our Event Hubs-compatible endpoint) or a hub name, with ${EVENTHUB_CONNECTION_STRING_ENV}",
        "HUB",
        "eventhub",
    ),
    Setting("consumer_group", _consumer_group, "$Default", "Event Hubs consumer group the sink reads", "NAME", None),
    Setting(
        "eventhub_consumers",
        _positive_int,
        1,
        "Event Hubs sink processes; the hub's partitions are divided among them",
        "N",
        "eventhub_consumers",
    ),
    Setting(
        "eventhub_transport",
        _choice("amqp", "websocket"),
        "amqp",
        "how the Event Hubs clients connect: amqp (5671) or websocket (443, for firewalled CI)",
        "{amqp,websocket}",
        None,
    ),
    Setting(
        "bridge",
        _choice("embedded", "none"),
        "embedded",
        "with --iot-sink eventhub: 'embedded' forwards MQTT to Event Hubs (the IoT platform stand-in); "
        "'none' when a real platform does it",
        "{embedded,none}",
        "bridge",
    ),
    Setting(
        "master_bind",
        _host_port,
        ("127.0.0.1", 0),
        "where the Locust master listens for workers, e.g. 0.0.0.0:5557 for remote workers (port 0: any free port)",
        "HOST:PORT",
        None,
    ),
    Setting(
        "expect_workers",
        _positive_int,
        None,
        "Locust workers (local and remote together) the run waits for before it starts (default: --iot-workers)",
        "N",
        None,
    ),
    Setting(
        "clock_correction",
        _bool,
        False,
        "correct each worker's times by its clock offset to the master (measured NTP-style every run)",
        "",
        None,
        flag=True,
    ),
    Setting("tls_ca", _file, None, "CA file that signed the broker's certificate (mqtts://)", "FILE", None),
    Setting("tls_cert", _file, None, "client certificate for mutual TLS (with --iot-tls-key)", "FILE", None),
    Setting("tls_key", _file, None, "private key of the client certificate", "FILE", None),
    Setting(
        "tls_insecure",
        _bool,
        False,
        "do not verify the broker's certificate and host name (only for test brokers)",
        "",
        None,
        flag=True,
    ),
    Setting(
        "influx_url",
        _http_url,
        None,
        f"export each run to InfluxDB v2 at URL (token from ${INFLUX_TOKEN_ENV})",
        "URL",
        None,
    ),
    Setting("influx_org", _text, "iotperf", "InfluxDB organization", "ORG", None),
    Setting("influx_bucket", _text, "iotperf", "InfluxDB bucket", "BUCKET", None),
    Setting("report_dir", _path, None, "write each perf test's result to DIR/<test id>.json and .html", "DIR", None),
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
            # Checked even when the command line overrides it: a bad value in a
            # test must not hide until someone runs without the override.
            try:
                value = setting.parse(str(raw)) if not isinstance(raw, bool) else _reject_bool(raw)
            except ValueError as exc:
                raise ConfigError(f"iot_perf.run({kwarg}={raw!r}) (test code): {exc}") from None
            if values[setting.name].source not in (CLI, ENV):
                values[setting.name] = Resolved(value, CODE)
        return RunSettings(values)


def _reject_bool(raw: bool) -> Any:
    raise ValueError(f"expected a value, got {raw!r}")


@dataclass
class RunSettings(SessionSettings):
    """Settings of one run, with every precedence applied."""

    def for_run(self, code: Mapping[str, Any]) -> RunSettings:
        raise TypeError("RunSettings are final")

    @property
    def devices(self) -> int:
        return int(self["devices"])

    @property
    def rate(self) -> float:
        return float(self["rate"])

    @property
    def duration_s(self) -> float:
        return float(self["duration"])

    @property
    def ramp_up_s(self) -> float:
        explicit = self["ramp_up"]
        if explicit is not None:
            return float(explicit)
        return max(1.0, self.devices / 500.0)

    @property
    def workers(self) -> int:
        explicit = self["workers"]
        return int(explicit) if explicit is not None else default_workers()

    @property
    def expect_workers(self) -> int:
        explicit = self["expect_workers"]
        return int(explicit) if explicit is not None else max(self.workers, 1)

    @property
    def sink_topic(self) -> str:
        explicit = self["sink_topic"]
        if explicit is not None:
            return str(explicit)
        return topic_filter_for(str(self["topic"]))

    def mqtt_options(self, tls: bool) -> MqttClientOptions:
        """How this run's MQTT clients connect to a broker (``tls``: the broker URL is mqtts)."""
        return MqttClientOptions(
            tls=tls,
            ca_file=_str_or_none(self["tls_ca"]),
            cert_file=_str_or_none(self["tls_cert"]),
            key_file=_str_or_none(self["tls_key"]),
            insecure=bool(self["tls_insecure"]),
            username=self["username"],
        )

    def sources(self) -> dict[str, str]:
        return {name: resolved.source for name, resolved in self.values.items()}

    def describe(self) -> dict[str, Any]:
        """JSON-friendly values of every setting (no secrets live in settings)."""
        out: dict[str, Any] = {}
        for name, resolved in self.values.items():
            value = resolved.value
            out[name] = str(value) if isinstance(value, Path) else value
        out["ramp_up"] = self.ramp_up_s
        out["workers"] = self.workers
        out["expect_workers"] = self.expect_workers
        host, port = self["master_bind"]
        out["master_bind"] = f"{host}:{port}"
        out["sink_topic"] = self.sink_topic
        return out


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
            raise ConfigError(f"{where}: {exc}") from None
    return SessionSettings(values)
