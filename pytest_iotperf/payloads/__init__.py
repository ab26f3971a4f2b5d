"""Payloads of the user's: JSON templates with generators, or a callable (issue 15).

In test code::

    from pytest_iotperf.payloads import choice, device_id, normal, now, uniform

    iot_perf.run(payload={
        "deviceId": device_id(),
        "temperature": uniform(15, 30, digits=1),
        "humidity": normal(45, 5, digits=1),
        "ts": now("iso"),
        "status": choice(["ok", "warn"], weights=[9, 1]),
    })

In a file (``--iot-payload-file``), the same generators are written
``{"$uniform": [15, 30]}``.  A callable ``payload(device, seq) -> bytes | dict``
covers anything else; it travels to the workers by ``module:qualname``.

A template is compiled once (every argument checked, naming the field of a bad
one) and rendered per message as one string format; random values come from a
stream per device seeded from the run's seed and the device number.  With
``--iot-payload-bytes`` set, only the fixed payload is padded: a template or a
callable's body is what the user wrote, since a platform that checks its schema
would refuse an extra field.
"""

from __future__ import annotations

from pytest_iotperf.payloads.callables import CallablePayload, callable_ref, import_root, load_callable
from pytest_iotperf.payloads.errors import PayloadError
from pytest_iotperf.payloads.file_form import payload_file, to_file_form
from pytest_iotperf.payloads.generators import (
    GENERATORS,
    Generator,
    choice,
    counter,
    device_id,
    device_number,
    normal,
    now,
    random_string,
    sine,
    uniform,
    walk,
)
from pytest_iotperf.payloads.prepared import JSON_CONTENT_TYPE, PreparedPayload, check_message_spec
from pytest_iotperf.payloads.template import CompiledTemplate, DeviceTemplate, compile_template

__all__ = [
    "GENERATORS",
    "JSON_CONTENT_TYPE",
    "CallablePayload",
    "CompiledTemplate",
    "DeviceTemplate",
    "Generator",
    "PayloadError",
    "PreparedPayload",
    "callable_ref",
    "check_message_spec",
    "choice",
    "compile_template",
    "counter",
    "device_id",
    "device_number",
    "import_root",
    "load_callable",
    "normal",
    "now",
    "payload_file",
    "random_string",
    "sine",
    "to_file_form",
    "uniform",
    "walk",
]
