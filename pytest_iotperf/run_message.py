"""What a run's messages look like, decided on the pytest side before anything starts.

Turns the payload settings (``payload=`` in test code, ``--iot-payload-file``,
``--iot-header``, ``--iot-header-key``, ``--iot-seed``) into the fleet's
:class:`~pytest_iotperf.message_spec.MessageSpec` and refuses what cannot
work before a process starts: a bad template (naming the field), a callable
that cannot be imported or raises, a non-JSON payload with the header in the
body, the header in properties where the protocol has none, MQTT 5 against
IoT Hub.  Every message names where the value came from.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import RunSettings
from pytest_iotperf.errors import ConfigError
from pytest_iotperf.message_spec import HeaderPlacement, MessageSpec

__all__ = ["check_protocol", "plan_message"]


def plan_message(settings: RunSettings, run_id: str) -> MessageSpec:
    """The run's message spec (a seed drawn when none was asked for), or a ConfigError naming the setting.

    Whether the broker can carry the header placement is :func:`check_protocol`'s, called first by the run.

    Raises:
        ConfigError: the payload or its header placement cannot work; the message names where it came from.
    """
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    payload = settings.payload
    if payload is None:  # our own JSON: nothing to compile or check
        return MessageSpec(header=_header(settings), header_key=settings.header_key, seed=seed)
    # Imported here: the payload machinery is needed only for a payload of the user's.
    from pytest_iotperf.payloads import (
        PayloadError,
        callable_ref,
        check_message_spec,
        import_root,
        load_callable,
        payload_file,
        to_file_form,
    )

    where = _where(settings)
    common: dict[str, Any] = {
        "header": _header(settings),
        "header_key": settings.header_key,
        "seed": seed,
        "source": where,
    }
    try:
        if isinstance(payload, Path):
            spec = MessageSpec(kind="template", template=payload_file(payload), **common)
        elif isinstance(payload, dict):
            spec = MessageSpec(kind="template", template=to_file_form(payload, where=where), **common)
        else:
            function = load_callable(payload, where=where) if isinstance(payload, str) else payload
            ref = payload if isinstance(payload, str) else callable_ref(payload)
            # Local workers are fresh interpreters: a function of a test module imports there from the
            # directory pytest imported it from (remote workers need the module installed).
            spec = MessageSpec(kind="callable", callable_ref=ref, callable_path=import_root(function), **common)
        check_message_spec(spec, run_id)
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None  # names the field and where the payload came from
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec


def check_protocol(settings: RunSettings, broker: BrokerEndpoint) -> None:
    """Refuse the combinations of header placement, MQTT version and transport no broker of this kind can carry."""
    v5 = settings.mqtt_version == "5"
    if broker.iothub and v5:
        raise ConfigError(
            f"--iot-mqtt-version 5 ({settings.source('mqtt_version')}): IoT Hub's device endpoint speaks MQTT 3.1.1; "
            "its properties travel in the topic's property bag (--iot-header properties works with 3.1.1)"
        )
    if broker.kind == "amqtt" and v5:
        raise ConfigError(
            f"--iot-mqtt-version 5 ({settings.source('mqtt_version')}): the embedded amqtt broker speaks MQTT 3.1.1 "
            "only; install mosquitto (apt-get install mosquitto) for MQTT 5"
        )
    if settings.header == "properties" and not (v5 or broker.iothub):
        raise ConfigError(
            f"--iot-header properties ({settings.source('header')}): MQTT 3.1.1 has no message properties; "
            "use --iot-mqtt-version 5 (user properties), or an IoT Hub broker (its property bag)"
        )
    if settings.topic_alias and not v5:
        raise ConfigError(
            f"--iot-topic-alias ({settings.source('topic_alias')}): topic aliases are MQTT 5; "
            "add --iot-mqtt-version 5"
        )
    if settings.transport == "websockets" and broker.kind == "iothub-embedded":
        raise ConfigError(
            f"--iot-transport websockets ({settings.source('transport')}): the embedded IoT Hub has no WebSocket "
            "listener; use tcp with it (a real hub serves MQTT over WebSockets on 443)"
        )


def _header(settings: RunSettings) -> HeaderPlacement:
    return "properties" if settings.header == "properties" else "body"


def _where(settings: RunSettings) -> str:
    payload = settings.payload
    source = settings.source("payload_file")
    if isinstance(payload, Path):
        return f"--iot-payload-file={payload} ({source})"
    if payload is None:
        return "the fixed payload"
    return f"iot_perf.run(payload=...) ({source})"
