"""Global device numbers (master pool, worker side), device names from templates, the phase of device n."""

from __future__ import annotations

import pytest

from pytest_iotperf.fleet.identity_spec import IdentitySpec
from pytest_iotperf.fleet.naming import DEVICE_FIELDS, DEVICE_ID_FIELDS, DeviceNaming, check_template
from pytest_iotperf.fleet.numbering import LocalNumbers, NumberPool, count_of
from pytest_iotperf.fleet.spec import phase_of


def test_pool_hands_out_each_number_once_lowest_first_from_the_offset() -> None:
    pool = NumberPool(offset=1000, count=10)
    assert pool.take(4, "a") == [[1000, 1004]]
    assert pool.take(3, "b") == [[1004, 1007]]
    assert pool.take(5, "a") == [[1007, 1010]]  # only 3 left: fewer than asked
    assert pool.exhausted and pool.remaining == 0
    assert pool.take(2, "b") == [] and pool.take(0, "c") == []
    assert pool.given == {"a": 7, "b": 3}


def test_worker_asks_for_what_its_target_lacks_and_uses_numbers_once() -> None:
    local = LocalNumbers()
    assert local.to_ask(5) == 5
    local.asked(5)
    assert local.to_ask(5) == 0 and local.to_ask(8) == 3  # the target grew while the first answer was on its way
    local.answered([[0, 2], [7, 10]], asked=5)
    assert not local.exhausted and local.free == 5 and local.received == 5
    assert [local.take() for _ in range(6)] == [0, 1, 7, 8, 9, None]
    assert local.used == 5 and local.free == 0


def test_a_short_answer_means_the_pool_is_dry_and_later_users_get_no_number() -> None:
    pool = NumberPool(0, 3)
    local = LocalNumbers()
    local.asked(2)
    local.answered(pool.take(2, "w"), asked=2)
    local.asked(4)  # a lost worker's users were re-dispatched here
    local.answered(pool.take(4, "w"), asked=4)
    assert local.exhausted and local.to_ask(100) == 0
    assert [local.take() for _ in range(4)] == [0, 1, 2, None]
    local.gave_none()
    assert local.none_left == 1 and count_of(pool.take(1)) == 0


@pytest.mark.parametrize(("offset", "count"), [(-1, 5), (0, -1)])
def test_pool_refuses_negative_bounds(offset: int, count: int) -> None:
    with pytest.raises(ValueError):
        NumberPool(offset, count)


def test_phase_of_device_n_spreads_any_run_of_numbers_evenly() -> None:
    rate = 2.0
    for first in (0, 1000):
        phases = [phase_of(n, rate) for n in range(first, first + 1000)]
        assert all(0 <= p < 1 / rate for p in phases)
        buckets = [0] * 10
        for p in phases:
            buckets[int(p * rate * 10)] += 1
        assert max(buckets) - min(buckets) < 30


def test_device_ids_and_client_ids_from_templates() -> None:
    naming = DeviceNaming(IdentitySpec(), "r1")
    assert naming.name(7).device_id == "dev000007" and naming.name(123456).device_id == "dev123456"
    assert naming.client_id(naming.name(7)) == "dev000007"  # the client id defaults to the device id
    custom = DeviceNaming(
        IdentitySpec(device_id_template="{run_id}-sensor-{n:x}", client_id_template="c{n}-{device_id}"), "r1"
    )
    name = custom.name(255)
    assert name.device_id == "r1-sensor-ff" and custom.client_id(name) == "c255-r1-sensor-ff"


@pytest.mark.parametrize(
    ("template", "fields", "problem"),
    [
        ("dev{n:06d}", DEVICE_ID_FIELDS, None),
        ("{device_id}-{n}-{run_id}", DEVICE_FIELDS, None),
        ("dev{{literal}}{n}", DEVICE_ID_FIELDS, None),
        ("dev{device_id}", DEVICE_ID_FIELDS, "uses {device_id}; it may use {n}, {run_id}"),
        ("dev{}", DEVICE_ID_FIELDS, "uses {}"),
        ("dev{n.real}", DEVICE_ID_FIELDS, "uses {n.real}"),
        ("dev{n", DEVICE_ID_FIELDS, "not a valid template"),
        ("dev{n:zz}", DEVICE_ID_FIELDS, "format code"),
    ],
)
def test_template_check_names_what_is_wrong(template: str, fields: frozenset[str], problem: str | None) -> None:
    found = check_template(template, fields, "--iot-device-id")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and found.startswith("--iot-device-id ")


def test_identity_spec_round_trips_and_refuses_a_negative_offset() -> None:
    spec = IdentitySpec(device_offset=5, credentials_file="c.csv", cert_template="certs/{device_id}.pem")
    assert IdentitySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="offset"):
        IdentitySpec(device_offset=-1)
