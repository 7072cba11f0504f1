"""SIGINT and SIGTERM as `KeyboardInterrupt`, so that an interrupted stage unwinds: temporary
files are removed (outputs stay old or absent) and MLflow runs are ended KILLED.

Some steps must not be cut in half, such as creating an MLflow run and keeping its id (the run
would be left RUNNING with nobody to end it). `deferred()` holds an interrupt until its
block is over, then raises it. A second signal while one is held raises at once, so a
block that hangs (a tracking server that stopped answering) can still be stopped.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"depth": 0, "pending": None}


def _interrupt(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _state["depth"] and not _state["pending"]:
        _state["pending"] = name
        return
    _state["pending"] = None
    raise KeyboardInterrupt(name)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report a process killed by it."""
    return 128 + getattr(signal.Signals, str(exc), signal.SIGINT).value


@contextlib.contextmanager
def as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `KeyboardInterrupt("SIGTERM")` (or
    SIGINT); the previous handlers come back afterwards."""
    previous = {s: signal.signal(s, _interrupt) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (under `as_interrupt`) until the block ends, then raise it."""
    entered = False
    try:
        _state["depth"] += 1
        entered = True
        yield
    finally:
        if entered:
            _state["depth"] -= 1
        if not _state["depth"] and _state["pending"]:
            name, _state["pending"] = _state["pending"], None
            raise KeyboardInterrupt(name)
