"""Create or delete a fleet's device identities in an IoT Hub's registry.

    python -m pytest_iotperf.iothub provision   --count N [--device-id TEMPLATE] [--offset K] [--ca-file FILE]
    python -m pytest_iotperf.iothub deprovision --count N [--device-id TEMPLATE] [--offset K] [--ca-file FILE]

Devices ``offset .. offset+count-1`` are named by the template as the fleet names them (default
``dev{n:06d}``: use the same ``--device-id`` / ``--offset`` as ``--iot-device-id`` / ``--iot-device-offset``).
The hub and its key come from ``$IOTPERF_IOTHUB_CONNECTION_STRING`` only: a connection string of a policy
that may write the registry (``HostName=NAME.azure-devices.net;SharedAccessKeyName=registryReadWrite;
SharedAccessKey=...``). ``HostName`` may carry a port (``127.0.0.1:8443``: the embedded hub's registry);
tokens are signed for the host without it.

Idempotent (existing devices count as created, missing ones as deleted: run it again after an
interruption); throttling is retried. Exit status: 0 all done, 1 some devices or a call failed,
2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from pytest_iotperf.fleet.naming import template_fields
from pytest_iotperf.iothub.connection_string import IotHubConnectionString, parse_iothub_connection_string
from pytest_iotperf.iothub.progress import ProgressBar
from pytest_iotperf.iothub.registry_client import Mode, RegistryError, provision, split_host_port
from pytest_iotperf.secrets import IOTHUB_CONNECTION_STRING_ENV, Scrubber, secret_env_values

__all__ = ["device_ids_for", "main"]

_MODES: Final[dict[str, Mode]] = {"provision": "create", "deprovision": "delete"}
_SHOWN_FAILURES: Final = 10


class UsageError(Exception):
    """A bad option or environment: exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_iotperf.iothub",
        description="Create (provision) or delete (deprovision) device identities in an IoT Hub's registry.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{provision,deprovision}")
    for name, what in (("provision", "create devices"), ("deprovision", "delete devices")):
        sub = commands.add_parser(name, help=f"{what} (100 per registry call)")
        sub.add_argument("--count", type=int, required=True, help="number of devices")
        sub.add_argument(
            "--device-id",
            default="dev{n:06d}",
            metavar="TEMPLATE",
            help="device id template with {n} and an optional format spec (default: dev{n:06d})",
        )
        sub.add_argument("--offset", type=int, default=0, metavar="K", help="first device number (default 0)")
        sub.add_argument("--ca-file", default=None, metavar="FILE", help="CA bundle for the hub (default: system CAs)")
    return parser


def device_ids_for(template: str, count: int, offset: int = 0) -> list[str]:
    """The ids of devices ``offset .. offset+count-1``.

    Raises:
        UsageError: a bad template (unknown fields, ``{run_id}``, no ``{n}``, a character a device id cannot
            have), a negative offset or count, or two devices given the same id.
    """
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    if offset < 0:
        raise UsageError(f"--offset must be 0 or more, got {offset}")
    fields = template_fields(template)
    if fields is None:
        raise UsageError(f"--device-id {template!r} is not a valid template (a literal brace: {{{{ or }}}})")
    if "run_id" in fields:
        raise UsageError(
            f"--device-id {template!r} uses {{run_id}}: ids that change from run to run cannot be provisioned ahead;"
            " use a template with {n} only"
        )
    if fields != {"n"}:
        raise UsageError(f"--device-id {template!r} must use {{n}} and nothing else (e.g. dev{{n:06d}})")
    try:
        ids = [template.format(n=n) for n in range(offset, offset + count)]
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--device-id {template!r}: {exc}") from None
    if len(set(ids)) != len(ids):
        raise UsageError(f"--device-id {template!r} gives two devices the same id")
    for device_id in ids[:1]:
        if any(char in device_id for char in "/+#") or any(char.isspace() for char in device_id):
            raise UsageError(f"--device-id {template!r}: a device id cannot contain '/', '+', '#' or white space")
        if len(device_id) > 128:
            raise UsageError(f"--device-id {template!r}: a device id has at most 128 characters")
    return ids


def _connection_string(environ: Mapping[str, str]) -> IotHubConnectionString:
    where = f"${IOTHUB_CONNECTION_STRING_ENV}"
    text = environ.get(IOTHUB_CONNECTION_STRING_ENV, "").strip()
    if not text:
        raise UsageError(
            f"{where} is not set: it must hold the connection string of a hub policy that may write the registry"
            " (HostName=NAME.azure-devices.net;SharedAccessKeyName=registryReadWrite;SharedAccessKey=...)"
        )
    try:
        parsed = parse_iothub_connection_string(text, where)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if parsed.policy is None:
        raise UsageError(
            f"{where} is a device's connection string (DeviceId=...); provisioning needs a hub policy that may"
            " write the registry (SharedAccessKeyName=registryReadWrite)"
        )
    try:
        split_host_port(parsed.host)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return parsed


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-file {ca_file!r} cannot be read as a CA bundle: {exc}") from None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    scrub = Scrubber(secret_env_values(environ))
    mode = _MODES[args.command]
    try:
        device_ids = device_ids_for(args.device_id, args.count, args.offset)
        hub = _connection_string(environ)
        context = _ssl_context(args.ca_file)
    except UsageError as exc:
        print(f"{args.command}: error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    bar = ProgressBar(args.command, sys.stderr)
    try:
        result = provision(hub.host, hub.policy or "", hub.key, device_ids, mode, context, bar)
    except RegistryError as exc:
        bar.close()
        print(f"{args.command}: error: {scrub(str(exc))}", file=sys.stderr)
        print(f"{args.command}: what was done stays done; running the command again finishes it", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print(f"{args.command}: interrupted; running the command again finishes it", file=sys.stderr)
        return 130
    bar.close()
    for failure in result.failures[:_SHOWN_FAILURES]:
        line = f"{args.command}: {failure.device_id}: {failure.error_code}: {failure.error_status}"
        print(scrub(line), file=sys.stderr)
    if len(result.failures) > _SHOWN_FAILURES:
        print(f"{args.command}: ... and {len(result.failures) - _SHOWN_FAILURES} more failed", file=sys.stderr)
    print(f"{args.command}: {hub.host}: {result.summary()}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
