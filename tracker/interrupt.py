"""SIGTERM taken the way Ctrl-C is, delivered even where Python would lose it.

A signal handler's exception is raised in the main thread at whatever it is doing; when that
is a C extension's deallocator (a ZeroMQ message buffer freed after a frame was processed),
Python prints "Exception ignored" and the request to stop is gone. So the handler also
records the request, and the pipeline's host loop (:func:`check`, at least twice a second)
raises it again if it never arrived.
"""
from __future__ import annotations

__all__ = ["Terminated", "request", "delivered", "check", "reset"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us), taken the way Ctrl-C is: the run file is closed."""


_state = {"requested": False, "delivered": False}


def request() -> None:
    """Record a termination request (the SIGTERM handler, before it raises :class:`Terminated`)."""
    _state["requested"] = True


def delivered() -> None:
    """An ``except KeyboardInterrupt`` has the exception in hand: :func:`check` stays quiet."""
    _state["delivered"] = True


def check() -> None:
    """Raise :class:`Terminated` once if a request was recorded but its exception never arrived."""
    if _state["requested"] and not _state["delivered"]:
        _state["delivered"] = True
        raise Terminated()


def reset() -> None:
    _state["requested"] = _state["delivered"] = False
