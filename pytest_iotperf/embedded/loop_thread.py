"""An asyncio server on its own event loop in a background thread, as a context manager.

The embedded Event Hubs endpoint and the embedded IoT Hub both run this way
in tests and benchmarks (the session runs them as child processes instead).
A subclass gives the server; this class owns the thread, the start-up
handshake (an error raised while starting reaches the caller), calls onto the
loop, and the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Protocol, Self, TypeVar

__all__ = ["AsyncServer", "LoopThread"]

_T = TypeVar("_T")


class AsyncServer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LoopThread:
    """Runs ``server`` on a new event loop in a daemon thread named ``name``."""

    def __init__(
        self, server: AsyncServer, name: str, start_timeout: float, error: type[Exception], what: str = "server"
    ) -> None:
        self._server = server
        self._name = name
        self._what = what  # for the message when it does not start
        self._start_timeout = start_timeout
        self._error = error  # raised when the server does not start in time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> Self:
        """Start the loop thread and wait until the server listens (or re-raise why it could not)."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise self._error(f"The {self._what} did not start within {self._start_timeout} s.")
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def call(self, function: Callable[[], _T]) -> _T:
        """Run ``function()`` on the server's loop and return its result (its state lives on that loop only)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return function()
        done: Future[_T] = Future()

        def run() -> None:
            try:
                done.set_result(function())
            except BaseException as exc:  # re-raised in the caller's thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self._server.start()
        except BaseException as exc:  # reported to the starting thread
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await self._server.stop()

    def stop(self) -> None:
        """Stop the server and join the loop thread."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is not None and stopped is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopped.set)
            thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
