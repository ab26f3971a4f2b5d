"""mqtts:// with a CA file, a client certificate (mTLS, as the seed used) and a password; insecure only when asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_broker import Pki, TlsMosquitto, make_pki

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.embedded.broker import find_mosquitto
from pytest_iotperf.errors import BrokerError
from pytest_iotperf.result import RunResult
from pytest_iotperf.runner import PerfRun

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

USER = "fleet"
PASSWORD = "s3cret-7c1d-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMosquitto]:
    with TlsMosquitto(tmp_path_factory.mktemp("tls-broker"), pki, USER, PASSWORD) as server:
        yield server


def _run(
    broker: TlsMosquitto, cli: dict[str, str], monkeypatch: pytest.MonkeyPatch, password: str = PASSWORD
) -> RunResult:
    monkeypatch.setenv("IOTPERF_MQTT_PASSWORD", password)
    settings = resolve({"broker": broker.url, "username": USER, **cli}, {}, {}).for_run(
        {"devices": 5, "rate_per_device": 2, "duration": "2s", "workers": 1, "drain": "5s"}
    )
    return PerfRun(settings, BrokerEndpoint.external(broker.url)).execute()


@pytest.mark.fleet
def test_mutual_tls_with_password_runs_exactly(broker: TlsMosquitto, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    result = _run(broker, files, monkeypatch)
    assert result.sent == result.received == 20 and result.lost == 0
    assert result.broker == f"{broker.url} (external)"


@pytest.mark.fleet
def test_insecure_only_when_asked(broker: TlsMosquitto, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    client = {"tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    with pytest.raises(BrokerError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        _run(broker, client, monkeypatch)  # the test CA is not among the system CAs
    result = _run(broker, {**client, "tls_insecure": "true"}, monkeypatch)
    assert result.received == 20


@pytest.mark.fleet
def test_missing_client_certificate_or_wrong_password_fail_fast_and_never_show_it(
    broker: TlsMosquitto, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BrokerError) as no_cert:
        _run(broker, {"tls_ca": str(pki.ca)}, monkeypatch)
    assert broker.url.replace("mqtts://", "") in str(no_cert.value)
    files = {"tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    wrong = "wrong-password-4b1e"
    with pytest.raises(BrokerError) as refused:
        _run(broker, files, monkeypatch, password=wrong)
    assert "127.0.0.1" in str(refused.value)
    assert wrong not in str(refused.value) and PASSWORD not in str(refused.value)


def test_tls_files_must_exist(tmp_path: Path) -> None:
    from pytest_iotperf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--iot-tls-ca=.*nope.pem \(command line\): expected a readable file"):
        resolve({"tls_ca": str(tmp_path / "nope.pem")}, {}, {})
