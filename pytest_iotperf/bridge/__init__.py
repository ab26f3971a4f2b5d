"""The platform bridge: MQTT in, Event Hubs out, standing in for an IoT platform in a run.

``python -m pytest_iotperf.bridge SPEC_JSON REPORT_JSON`` subscribes to the
devices' topic filter and forwards every message body unchanged to Event
Hubs, with the device id as partition key.

Spec fields (JSON, no secrets):

- ``host``, ``port``, ``tls`` (false), ``username`` (none), ``qos`` (1): the MQTT broker
  and subscription; the password comes from ``IOTPERF_MQTT_PASSWORD``.  A run writes
  them as one ``connection`` object instead (``Connection.to_dict()``: these fields plus
  TLS files, protocol version, transport, keep-alive);
- ``topic_filter``: e.g. ``devices/+/telemetry``;
- ``topic_template``: the devices' topic, e.g. ``devices/{device_id}/telemetry``;
  the partition key is the ``{device_id}`` level of a message's topic, else
  the payload's ``device_id``, else none (the hub spreads such events);
- ``grouping`` (``key``): ``key`` sends one ``create_batch(partition_key=device)``
  batch per device and flush; ``partition`` hashes keys to partitions in the
  bridge and sends one batch per partition (each event keeps its key): far
  fewer round trips with many devices (see ``forwarder``);
- ``client_id`` (generated), ``run_id`` (only used in the generated client id);
- ``linger_ms`` (5), ``max_flush_events`` (5000): how long a flush waits for more
  messages, and its largest size;
- ``send_timeout_s`` (10), ``stop_timeout_s`` (10, used on EOF), ``start_timeout_s`` (10);
- ``retry_total`` (0), ``auth_timeout_s`` (5), ``eventhub_name`` (when the
  connection string has no ``EntityPath``): Event Hubs client settings.

The connection string comes from ``IOTPERF_EVENTHUB_CONNECTION_STRING`` only.
"""

from __future__ import annotations

from pytest_iotperf.bridge.spec import BridgeSpec

__all__ = ["BridgeSpec"]
