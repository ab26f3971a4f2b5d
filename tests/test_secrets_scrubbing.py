"""The one secrets module: what the scrubber removes and keeps, URL redaction, log filtering (pure, no fleet).

``test_secrets.py`` checks end to end that no secret reaches any output of a real run.
"""

from __future__ import annotations

import logging
from urllib.parse import quote_plus

import pytest

from pytest_iotperf.secrets import (
    EVENTHUB_CONNECTION_STRING_ENV,
    INFLUX_TOKEN_ENV,
    MQTT_PASSWORD_ENV,
    REDACTED,
    Scrubber,
    ScrubbingFilter,
    describe_error,
    redact_text,
    redact_url,
    redact_value,
)


def test_secret_env_vars_are_the_documented_names() -> None:
    assert MQTT_PASSWORD_ENV == "IOTPERF_MQTT_PASSWORD"
    assert EVENTHUB_CONNECTION_STRING_ENV == "IOTPERF_EVENTHUB_CONNECTION_STRING"
    assert INFLUX_TOKEN_ENV == "IOTPERF_INFLUX_TOKEN"


def test_scrubber_removes_known_values_and_their_url_encoded_form() -> None:
    secret = "p@ss/word+1"
    scrub = Scrubber([secret])
    assert scrub(f"login {secret} and {quote_plus(secret)} failed") == f"login {REDACTED} and {REDACTED} failed"
    scrub.add("")  # nothing to hide: ignored, not a replacement of every position
    assert scrub("plain") == "plain"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a;SharedAccessKey=abc;b", "a;SharedAccessKey=***;b"),
        ("token SharedAccessSignature sr=x&sig=abc%2F&se=1 refused", "token SharedAccessSignature *** refused"),
        ("url?sig=abc&se=1", "url?sig=***&se=1"),
        ("broker mqtt://alice:pw-1@host:1883 is slow", "broker mqtt://alice:***@host:1883 is slow"),
        ("password=hunter2 rest", "password=*** rest"),
        ("api_key: k3y, next", "api_key: ***, next"),
        ("refused Token abcd1234efgh", "refused Token ***"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "Authorization: Bearer ***"),
        # Prose around the word token stays readable.
        ("token has expired", "token has expired"),
        ("the server refused the token; check it", "the server refused the token; check it"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_secret_shapes(text: str, expected: str) -> None:
    assert Scrubber()(text) == expected
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://user:s3cret@broker.example:1883", "mqtt://***@broker.example:1883"),
        ("http://user:pw@influx.example:8086/", "http://***@influx.example:8086/"),
        ("http://influx.example:8086/api?token=t0k&org=o#frag", "http://influx.example:8086/api?token=***&org=***"),
        ("mqtts://[::1]:8883", "mqtts://[::1]:8883"),
        ("mqtt://broker:port", "mqtt://broker:port"),  # unparsable port: still shown, for the error about it
        ("u:pw@host", "u:***@host"),
        ("influx:8086", "influx:8086"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_value_masks_by_name_and_by_shape() -> None:
    assert redact_value("anything", "mqtt_password") == REDACTED
    assert redact_value("env IOTPERF_X", "") == "env IOTPERF_X"
    assert redact_value("Endpoint=sb://h/;SharedAccessKey=k") == REDACTED
    assert redact_value({"token": "t", "url": "mqtt://a:b@h"}) == {"token": REDACTED, "url": "mqtt://a:***@h"}
    assert redact_value(None, "password") is None
    # Named like a secret, holding none: where the header sits in a JSON body is worth reading in a report.
    assert redact_value("meta.trace", "header_key") == "meta.trace"
    assert redact_value("certs/d.key", "tls_key") == REDACTED


def test_describe_error_is_one_scrubbed_bounded_line() -> None:
    scrub = Scrubber(["k3y-secret"])
    error = RuntimeError("auth failed with k3y-secret\nsecond line with more detail")
    assert describe_error(error, scrub) == f"RuntimeError: auth failed with {REDACTED}"
    assert describe_error(ValueError(), scrub) == "ValueError"
    long = describe_error(RuntimeError("x" * 1000), scrub, limit=50)
    assert len(long) == 50 and long.endswith("...")


def test_scrubbing_filter_rewrites_records_that_carry_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("iotperf-test-scrubbing-filter")
    scrubbing = ScrubbingFilter(Scrubber(["tok-123456789"]))
    logger.addFilter(scrubbing)
    try:
        with caplog.at_level(logging.DEBUG, logger=logger.name):
            logger.debug("body: %s", "refused Token tok-123456789")
            logger.debug("harmless %d", 5)
    finally:
        logger.removeFilter(scrubbing)
    assert "tok-123456789" not in caplog.text
    assert [record.getMessage() for record in caplog.records] == ["body: refused Token ***", "harmless 5"]
