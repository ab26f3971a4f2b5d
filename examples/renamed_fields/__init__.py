"""Example: a platform that renames fields, read back by the pytest_iotperf_extract hook."""
