"""A FHIR server that hangs: accepts connections on 127.0.0.1, then never answers (or answers bytewise)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

Busy = TypeVar("Busy")
Sent = TypeVar("Sent")


@contextmanager
def hung_server(drip: bytes | None = None, scheme: str = "http") -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts and then never answers (or drips `drip` one byte at a time).

    Yields a FHIR base URL on it; with scheme "https" a client hangs in the TLS handshake instead.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            connections.append(connection)
            if drip is not None:
                threading.Thread(target=_drip, args=(connection, drip, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/r4"
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in connections:
            connection.close()
        listener.close()


def _drip(connection: socket.socket, payload: bytes, stop: threading.Event) -> None:
    try:
        for byte in payload:
            if stop.wait(0.2):
                return
            connection.sendall(bytes([byte]))
    except OSError:
        return


def one_on_each_worker(busy: Callable[[], Busy], send: Callable[[], Sent]) -> tuple[list[Sent], list[Busy]]:
    """`send()` twice against a server of two sync workers, once on each; return the two answers and those
    of the two `busy()` calls.

    `busy()` is a call that keeps the worker serving it waiting (on a hung server, until a deadline). Worker A
    takes the first busy call, so the first send is served by worker B; B then takes the second busy call,
    so the second send waits until A is free again. Sequential calls alone may all land on one worker.
    """
    with ThreadPoolExecutor(2) as pool:
        first_busy = pool.submit(busy)  # worker A waits
        time.sleep(0.5)
        first = send()  # served by worker B
        second_busy = pool.submit(busy)  # worker B waits too
        time.sleep(0.5)
        second = send()  # queued until worker A is free again
        return [first, second], [first_busy.result(), second_busy.result()]
