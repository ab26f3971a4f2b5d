"""Azure IoT Hub, as a device fleet meets it: SAS tokens, connection strings, MQTT names, the registry.

Pure and stdlib-only (no pytest, no locust, no client library), so the
fleet's workers, the embedded IoT Hub and the provisioning command share it.
"""
