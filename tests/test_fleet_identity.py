"""Per-device identities: templates, the credentials file, one TLS context per certificate, global device ids.

The unit tests build providers directly; the fleet tests run real Locust
fleets and read the device ids back from the fleet's and the sink's reports.
"""

from __future__ import annotations

import dataclasses
import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_iotperf.broker_endpoint import BrokerEndpoint
from pytest_iotperf.config import resolve
from pytest_iotperf.connection import Connection
from pytest_iotperf.embedded.broker import EmbeddedBroker, find_mosquitto
from pytest_iotperf.fleet.credentials import CredentialsError, load_credentials
from pytest_iotperf.fleet.identity import IdentityError, TemplatedIdentity, check_device_files, provider_for
from pytest_iotperf.fleet.identity_spec import IdentitySpec
from pytest_iotperf.fleet.naming import DeviceName, DeviceNaming
from pytest_iotperf.fleet.spec import FleetSpec
from pytest_iotperf.mqtt_options import MqttClientOptions
from pytest_iotperf.processes import free_port
from pytest_iotperf.result import build_result
from pytest_iotperf.runner import PerfRun
from pytest_iotperf.secrets import MQTT_PASSWORD_ENV

SECRET = "pw-9f3a-never-shown"
SAS_KEY = "c2VjcmV0LWtleS1uZXZlci1zaG93bg=="


DEFAULT = IdentitySpec()


def _spec(identity: IdentitySpec = DEFAULT, connection: Connection | None = None) -> FleetSpec:
    connection = connection or Connection("127.0.0.1", 1883, options=MqttClientOptions(username="fleet"))
    return FleetSpec("run7", 10, 1.0, 1.0, 0.0, connection, identity=identity)


def _device(n: int, identity: IdentitySpec = DEFAULT) -> DeviceName:
    return DeviceNaming(identity, "run7").name(n)


# -- templates ---------------------------------------------------------------------------------------------------


def test_user_name_and_password_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = IdentitySpec(username_template="{device_id}@{run_id}")
    provider = provider_for(_spec(identity), {MQTT_PASSWORD_ENV: "pw-{n}-{device_id}"})
    found = provider.identity_for(_device(3))
    assert (found.client_id, found.username, found.password) == ("dev000003", "dev000003@run7", "pw-3-dev000003")
    assert found.expires_at is None and "pw-3" not in repr(found)


@pytest.mark.parametrize("password", ["a{b}c", "x{{y", "{", "p{n.real}", "{}"])
def test_a_password_that_is_no_device_template_is_used_as_it_is(password: str) -> None:
    found = provider_for(_spec(), {MQTT_PASSWORD_ENV: password}).identity_for(_device(1))
    assert found.username == "fleet" and found.password == password


def test_no_password_without_a_user_name() -> None:
    spec = _spec(connection=Connection("127.0.0.1", 1883))
    found = provider_for(spec, {MQTT_PASSWORD_ENV: SECRET}).identity_for(_device(0))
    assert found.username is None and found.password is None


# -- the credentials file ---------------------------------------------------------------------------------------


def test_credentials_csv_rows_belong_to_device_offset_plus_k(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(f"device_id,username,password\nboiler-1,u1,{SECRET}\n,u2, {SECRET} \n")
    identity = IdentitySpec(credentials_file=str(path), device_offset=100)
    naming = DeviceNaming(identity, "run7")
    assert naming.name(100).device_id == "boiler-1"  # the file's device id is the registered name
    assert naming.name(101).device_id == "dev000101"  # an empty one takes the template
    provider = provider_for(_spec(identity), {MQTT_PASSWORD_ENV: "shared"})
    first = provider.identity_for(naming.name(100))
    assert (first.client_id, first.username, first.password) == ("boiler-1", "u1", SECRET)
    assert provider.identity_for(naming.name(101)).password == f" {SECRET} "  # blanks kept in a password only
    with pytest.raises(IdentityError) as missing:
        provider.identity_for(naming.name(102))
    assert "device number 102" in str(missing.value) and str(path) in str(missing.value)
    assert SECRET not in str(missing.value) and SECRET not in repr(load_credentials(path))


def test_credentials_key_column_is_a_tls_key_beside_cert_else_a_sas_key(tmp_path: Path) -> None:
    tls = tmp_path / "tls.csv"
    tls.write_text("device_id,cert,key\nd1,certs/d1.pem,certs/d1.key\n")
    (row,) = load_credentials(tls)
    assert (row.cert, row.cert_key, row.sas_key) == ("certs/d1.pem", "certs/d1.key", None)
    sas = tmp_path / "sas.csv"
    sas.write_text(f"device_id,key\nd1,{SAS_KEY}\n")
    assert load_credentials(sas)[0].sas_key == SAS_KEY and load_credentials(sas)[0].cert_key is None
    both = tmp_path / "both.jsonl"
    both.write_text(
        json.dumps({"device_id": "d1", "cert": "a.pem", "key": "a.key", "sas_key": SAS_KEY})
        + "\n\n"
        + json.dumps({"device_id": "d2", "password": SECRET, "username": None})
        + "\n"
    )
    first, second = load_credentials(both)
    assert (first.cert, first.cert_key, first.sas_key) == ("a.pem", "a.key", SAS_KEY)
    assert (second.line, second.password, second.username, second.cert_key) == (3, SECRET, None, None)
    assert SAS_KEY not in repr(first)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "", "empty; a CSV credentials file starts with a header"),
        ("a.csv", f"device_id,pasword\nd1,{SECRET}\n", ":1: unknown column 'pasword'"),
        ("a.csv", "device_id,password,password\n", ":1: column 'password' given twice"),
        ("a.csv", f"device_id,password\nd1,{SECRET},{SECRET}\n", ":2: 3 fields but the header names 2 columns"),
        ("a.csv", f"device_id,password\nd1,{SECRET}\nd1,{SECRET}\n", ":3: device id 'd1' already on line 2"),
        ("a.jsonl", '{"device_id": "d1", "password": "' + SECRET + '"\n', ":1: not JSON"),
        ("a.ndjson", f'["d1", "{SECRET}"]\n', ":1: a JSON lines credentials file has one object per line"),
        ("a.jsonl", '{"device_id": "d1", "password": 12345}\n', ":1: field 'password' must be a string"),
    ],
)
def test_credentials_errors_name_file_and_line_never_a_value(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CredentialsError) as failure:
        load_credentials(path)
    assert str(path) in str(failure.value) and message in str(failure.value)
    assert SECRET not in str(failure.value) and "12345" not in str(failure.value)


def test_an_unreadable_credentials_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"nope\.csv: cannot read it"):
        load_credentials(tmp_path / "nope.csv")


# -- certificates ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pytest_iotperf.embedded.iothub.certs import make_ca, make_device_certificates, make_server_certificate

    directory = tmp_path_factory.mktemp("device-pki")
    ca = make_ca(directory)
    server = make_server_certificate(directory / "server", ca)
    ids = [f"dev{n:06d}" for n in range(7, 17)]
    make_device_certificates(directory / "certs", ca, ids)
    return {"dir": directory, "ca": ca.cert_file, "server": server, "ids": ids}


def _tls(ca: str) -> Connection:
    return Connection("127.0.0.1", 8883, tls=True, options=MqttClientOptions(ca_file=ca))


def test_one_tls_context_per_distinct_certificate(device_pki: dict[str, Any]) -> None:
    certs = device_pki["dir"] / "certs"
    identity = IdentitySpec(cert_template=f"{certs}/{{device_id}}.pem", key_template=f"{certs}/{{device_id}}.key")
    provider = TemplatedIdentity(_spec(identity, _tls(device_pki["ca"])), {})
    contexts = [provider.identity_for(_device(n)).ssl_context for n in (7, 8, 7)]
    assert all(isinstance(c, ssl.SSLContext) for c in contexts)
    assert contexts[0] is not contexts[1] and contexts[0] is contexts[2] and len(provider.tls) == 2
    # One certificate for everyone (no field in the template): one context.
    shared = IdentitySpec(cert_template=f"{certs}/dev000007.pem", key_template=f"{certs}/dev000007.key")
    one = TemplatedIdentity(_spec(shared, _tls(device_pki["ca"])), {})
    assert one.identity_for(_device(7)).ssl_context is one.identity_for(_device(8)).ssl_context
    # Without TLS there is no context at all.
    assert TemplatedIdentity(_spec(identity), {}).identity_for(_device(7)).ssl_context is None


def test_a_missing_certificate_fails_the_device_naming_it(device_pki: dict[str, Any]) -> None:
    certs = device_pki["dir"] / "certs"
    identity = IdentitySpec(cert_template=f"{certs}/{{device_id}}.pem", key_template=f"{certs}/{{device_id}}.key")
    provider = TemplatedIdentity(_spec(identity, _tls(device_pki["ca"])), {})
    with pytest.raises(IdentityError, match=r"dev000099: client certificate .*dev000099\.pem"):
        provider.identity_for(_device(99))


def test_device_files_are_checked_before_the_run(device_pki: dict[str, Any], tmp_path: Path) -> None:
    certs = device_pki["dir"] / "certs"
    identity = IdentitySpec(
        device_offset=7, cert_template=f"{certs}/{{device_id}}.pem", key_template=f"{certs}/{{device_id}}.key"
    )
    assert check_device_files(identity, 10, "r") == []
    problems = check_device_files(identity, 40, "r", limit=3)
    assert problems[0] == f"dev000017: no certificate {certs}/dev000017.pem and no key {certs}/dev000017.key"
    assert len(problems) == 4 and problems[-1] == "... and 27 more device(s) with missing files"
    rows = tmp_path / "rows.csv"
    rows.write_text(f"device_id,cert,key\nboiler,{certs}/dev000007.pem,{tmp_path}/gone.key\n")
    found = check_device_files(IdentitySpec(credentials_file=str(rows)), 1, "r")
    assert found == [f"boiler: no key {tmp_path}/gone.key"]
    assert check_device_files(IdentitySpec(), 1000, "r") == []  # no per-device files: nothing to check


# -- fleets --------------------------------------------------------------------------------------------------------


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The fleet's and the sink's reports of the run, as the runner hands them to build_result."""
    captured: dict[str, Any] = {}

    def capture(**kwargs: Any) -> Any:
        captured.update(fleet=kwargs["fleet"], sink=kwargs["sink"])
        return build_result(**kwargs)

    monkeypatch.setattr("pytest_iotperf.runner.build_result", capture)
    return captured


def _ids(reports: dict[str, Any]) -> tuple[set[str], set[str]]:
    return set(reports["fleet"]["sent_by_device"]), set(reports["sink"]["ledger"]["devices"])


@pytest.mark.fleet
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_device_ids_are_global_numbers_unique_across_workers(reports: dict[str, Any]) -> None:
    settings = resolve({}, {}, {}).for_run(
        {"devices": 50, "rate_per_device": 2, "duration": "2s", "drain": "5s", "workers": 2, "qos": 0}
    )
    with EmbeddedBroker(prefer="mosquitto") as broker:
        result = PerfRun(settings, broker.endpoint).execute()
    expected = {f"dev{n:06d}" for n in range(50)}
    sent_ids, seen_ids = _ids(reports)
    assert sent_ids == seen_ids == expected
    assert all(w["devices"] > 0 for w in reports["fleet"]["workers"]) and len(reports["fleet"]["workers"]) == 2
    assert result.sent == result.received == result.scheduled and result.duplicates == 0 and result.lost == 0
    assert result.redispatched_devices == 0


class _CertMosquitto:
    """A Mosquitto with a plain listener (probe, sink) and an mTLS one taking each client's certificate CN as its
    user name (``use_identity_as_username``), logging every connection with its client id and user name."""

    def __init__(self, directory: Path, ca: str, server_cert: str, server_key: str) -> None:
        binary = find_mosquitto()
        assert binary is not None
        self.plain_port, self.tls_port = free_port(), free_port()
        self.log = directory / "mosquitto.log"
        config = directory / "mosquitto.conf"
        config.write_text(
            f"per_listener_settings false\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\ncafile {ca}\ncertfile {server_cert}\nkeyfile {server_key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"log_dest file {self.log}\nlog_type notice\nlog_type information\nconnection_messages true\n"
            "user root\n"
        )
        self.process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while "running" not in (self.log.read_text() if self.log.exists() else ""):
            assert self.process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)  # polling the broker's log for readiness, with a deadline

    def connections(self) -> list[tuple[str, str]]:
        """(client id, user name) of every client that connected over mTLS."""
        found = re.findall(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)", self.log.read_text())
        return [(client, user) for client, user in found]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def cert_broker(device_pki: dict[str, Any], tmp_path: Path) -> Iterator[_CertMosquitto]:
    server = device_pki["server"]
    broker = _CertMosquitto(tmp_path, device_pki["ca"], server.cert_file, server.key_file)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.fleet
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_each_device_connects_with_its_own_certificate(
    device_pki: dict[str, Any], cert_broker: _CertMosquitto, reports: dict[str, Any]
) -> None:
    certs = device_pki["dir"] / "certs"
    plain = f"mqtt://127.0.0.1:{cert_broker.plain_port}"
    settings = resolve(
        {
            "broker": plain,
            "device_offset": "7",
            "tls_ca": device_pki["ca"],
            "tls_cert": f"{certs}/{{device_id}}.pem",
            "tls_key": f"{certs}/{{device_id}}.key",
        },
        {},
        {},
    ).for_run({"devices": 10, "rate_per_device": 2, "duration": "2s", "drain": "5s", "workers": 1, "qos": 1})
    run = PerfRun(settings, BrokerEndpoint.external(plain))
    # The devices take the mTLS listener; the probe and the sink keep the plain one.
    mtls = dataclasses.replace(run.fleet_spec.connection, port=cert_broker.tls_port, tls=True)
    run.fleet_spec = dataclasses.replace(run.fleet_spec, connection=mtls)
    result = run.execute()
    ids = device_pki["ids"]
    assert _ids(reports) == (set(ids), set(ids))
    # Each device presented its own certificate: the broker took the certificate's CN (= device id) as user name.
    connections = cert_broker.connections()
    assert sorted(connections) == [(device_id, device_id) for device_id in ids]
    assert result.sent == result.received == result.scheduled and result.lost == 0
