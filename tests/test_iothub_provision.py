"""provision / deprovision: the registry client against the embedded IoT Hub's registry, and the command line."""

from __future__ import annotations

import io

import pytest

from pytest_iotperf.iothub.__main__ import UsageError, device_ids_for, main
from pytest_iotperf.iothub.progress import ProgressBar
from pytest_iotperf.iothub.registry_client import RetryPolicy, split_host_port

KEY = "c2VjcmV0LXJlZ2lzdHJ5LWtleS1mb3ItdGVzdHM="

# -- pure parts --


def test_device_ids_follow_the_fleets_template() -> None:
    assert device_ids_for("dev{n:06d}", 3, offset=7) == ["dev000007", "dev000008", "dev000009"]
    assert device_ids_for("sensor-{n}", 2) == ["sensor-0", "sensor-1"]


@pytest.mark.parametrize(
    ("template", "count", "offset", "says"),
    [
        ("dev{run_id}-{n}", 1, 0, "{run_id}"),
        ("dev", 2, 0, "must use {n}"),
        ("dev{n}{device_id}", 1, 0, "must use {n}"),
        ("dev{n:06d", 1, 0, "not a valid template"),
        ("dev{n:x.y}", 1, 0, "Invalid format"),
        ("dev {n}", 1, 0, "white space"),
        ("dev/{n}", 1, 0, "'/'"),
        ("d{n:.0e}", 2, 10, "same id"),  # 10 and 11 are both 1e+01
        ("dev{n}", 0, 0, "--count"),
        ("dev{n}", 1, -1, "--offset"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, count: int, offset: int, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        device_ids_for(template, count, offset)
    assert says in str(caught.value)


def test_host_and_port() -> None:
    assert split_host_port("hub.azure-devices.net") == ("hub.azure-devices.net", None)
    assert split_host_port("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert split_host_port("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError, match="port"):
        split_host_port("127.0.0.1:http")


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(first_s=0.5, cap_s=10)
    assert policy.delay_s(0, 3.0) == 3.0
    assert policy.delay_s(0, 3600.0) == 10
    assert 0.25 <= policy.delay_s(0, None) <= 0.5
    assert 5 <= policy.delay_s(10, None) <= 10


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_on_a_terminal_and_in_a_log() -> None:
    clock = _Clock()
    out = io.StringIO()
    bar = ProgressBar("provision", out, tty=True, width=10, clock=clock)
    clock.now = 1.0
    bar(100, 250)
    clock.now = 1.05
    bar(200, 250)  # within 0.1 s of the last redraw: skipped
    clock.now = 2.0
    bar(250, 250)  # the last one is always drawn
    bar.close()
    assert out.getvalue() == (
        "\rprovision [####------] 100/250 devices  100/s\rprovision [##########] 250/250 devices  125/s\n"
    )
    log = io.StringIO()
    clock.now = 0.0
    plain = ProgressBar("deprovision", log, tty=False, plain_every_s=5, clock=clock)
    for done in (0, 100, 200, 250):  # the last at 2 s, the others at once: only the first and the last show
        clock.now = 2.0 if done == 250 else 0.0
        plain(done, 250)
    plain.close()
    assert log.getvalue().splitlines() == ["deprovision:   0/250 devices", "deprovision: 250/250 devices  125/s"]


# -- the command line's configuration errors (no hub needed) --


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({}, "$IOTPERF_IOTHUB_CONNECTION_STRING is not set"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h;SharedAccessKey={KEY}"}, "neither"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h;DeviceId=d;SharedAccessKey={KEY}"}, "device's connection"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"SharedAccessKeyName=p;SharedAccessKey={KEY}"}, "no HostName"),
        ({"IOTPERF_IOTHUB_CONNECTION_STRING": f"HostName=h:x;SharedAccessKeyName=p;SharedAccessKey={KEY}"}, "port"),
    ],
)
def test_configuration_errors_exit_2_without_the_key(
    environ: dict[str, str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provision", "--count", "1"], environ) == 2
    out, err = capsys.readouterr()
    assert says in err and KEY not in out + err
