"""The registry's REST surface over HTTPS: just what ``provision``/``deprovision`` and a test call.

``POST /devices`` (bulk create/delete, at most 100), ``GET /devices/{id}``,
``PUT /devices/{id}`` and ``DELETE /devices/{id}``; every call needs an
``Authorization`` SAS token of the ``registryReadWrite`` policy (401 otherwise).
``throttle`` answers the first K authorized calls with 429 and ``Retry-After`` so a
client's retry can be tested.  HTTP/1.1 with Content-Length bodies and keep-alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from pytest_iotperf.embedded.iothub.auth import HubKeys, check_registry_token
from pytest_iotperf.embedded.iothub.registry import Registry

__all__ = ["RegistryHttp"]

_LOG = logging.getLogger(__name__)
MAX_BODY: Final = 1 << 20
MAX_HEADERS: Final = 100


class RegistryHttp:
    """Serves one HTTPS connection after another (``serve`` is the ``asyncio.start_server`` callback)."""

    def __init__(self, keys: HubKeys, registry: Registry, throttle: int = 0, retry_after_s: int = 1) -> None:
        self.keys = keys
        self.registry = registry
        self.throttle_left = throttle
        self.retry_after_s = retry_after_s
        self.calls = 0
        self.throttled = 0
        self.unauthorized = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except OSError as exc:  # ssl errors of a client that went away
            _LOG.debug("registry connection ended: %s", exc)
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await reader.readline()
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, _, value = text.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many headers")
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY or length < 0:
            await self._respond(writer, 413, {"Message": "ErrorCode:MessageTooLarge;"}, close=True)
            return False
        body = await reader.readexactly(length) if length else b""
        status, document, extra = self.handle(method.upper(), target, headers, body)
        keep = version.upper() == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        await self._respond(writer, status, document, extra, close=not keep)
        return keep

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON document, extra headers) for one request."""
        self.calls += 1
        problem = check_registry_token(self.keys, headers.get("authorization"), time.time())
        if problem is not None:
            self.unauthorized += 1
            _LOG.info("registry call refused: %s", problem)
            return 401, {"Message": f"ErrorCode:IotHubUnauthorizedAccess;{problem}", "ExceptionMessage": ""}, {}
        if self.throttle_left > 0:
            self.throttle_left -= 1
            self.throttled += 1
            message = {"Message": "ErrorCode:ThrottlingException;Throttled by the embedded hub (test option)."}
            return 429, message, {"Retry-After": str(self.retry_after_s)}
        path = urlsplit(target).path.rstrip("/")
        parts = [unquote(part) for part in path.split("/") if part]
        if parts == ["devices"] and method == "POST":
            try:
                items = json.loads(body or b"null")
            except ValueError:
                return 400, {"Message": "ErrorCode:ArgumentInvalid;The body is not JSON."}, {}
            status, document = self.registry.bulk(items)
            return status, document, {}
        if len(parts) == 2 and parts[0] == "devices":
            return self._device(method, parts[1], body)
        return 404, {"Message": f"ErrorCode:NotFound;No route for {method} {path}."}, {}

    def _device(self, method: str, device_id: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
        not_found = {"Message": f"ErrorCode:DeviceNotFound;Device {device_id} not found.", "ExceptionMessage": ""}
        if method == "GET":
            device = self.registry.get(device_id)
            return (200, device.to_json(), {}) if device is not None else (404, not_found, {})
        if method == "DELETE":
            return (204, None, {}) if self.registry.delete(device_id) else (404, not_found, {})
        if method == "PUT":
            try:
                document = json.loads(body or b"{}")
                symmetric = (document.get("authentication") or {}).get("symmetricKey") or {}
            except (ValueError, AttributeError):
                return 400, {"Message": "ErrorCode:ArgumentInvalid;The body is not a device."}, {}
            if not self.registry.create(device_id, symmetric.get("primaryKey"), symmetric.get("secondaryKey")):
                exists = {"Message": f"ErrorCode:DeviceAlreadyExists;Device {device_id} already exists."}
                return 409, exists, {}
            device = self.registry.get(device_id)
            assert device is not None
            return 200, device.to_json(), {}
        return 405, {"Message": f"ErrorCode:MethodNotAllowed;{method} is not allowed here."}, {}

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        document: Any,
        extra: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        body = b"" if document is None else json.dumps(document).encode()
        reason = HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        lines.append("Connection: close" if close else "Connection: keep-alive")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
