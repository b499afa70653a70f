"""SIGTERM taken the way Ctrl-C is, delivered even where Python would lose it.

A signal handler's exception is raised in the main thread at whatever it is doing; when that
is a C extension's deallocator (a ZeroMQ message buffer freed after a frame was processed),
Python prints "Exception ignored" and the request to stop is gone. So the handler also
records the request, and the pipeline's host loop (:func:`check`, at least twice a second)
raises it again if it never arrived.

A stop may also land in the middle of a frame's host work (the site map half updated), which
the run file would then hold. So a frame's host work is :func:`held`: a Ctrl-C or SIGTERM that
arrives inside it (through :func:`on_sigint` or a handler that calls :func:`raise_or_hold`) is
raised when the frame is done; a second Ctrl-C while the first waits is raised at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

__all__ = ["Terminated", "request", "delivered", "check", "reset", "held", "raise_or_hold", "on_sigint",
           "ctrl_c_held", "terminate_like_ctrl_c", "quit_on_ctrl_c"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us), taken the way Ctrl-C is: the run file is closed."""


_state = {"requested": None, "delivered": False, "depth": 0, "held": None, "lost": None}


def request(kind: type[KeyboardInterrupt] = Terminated) -> None:
    """Record a request to stop (a signal handler, before it raises ``kind``); the first one
    is what :func:`check` raises if the exception never arrives."""
    if _state["requested"] is None:
        _state["requested"] = kind


def delivered() -> None:
    """An ``except KeyboardInterrupt`` has the exception in hand: :func:`check` stays quiet."""
    _state["delivered"] = True


def check() -> None:
    """Raise a stop held back by :func:`held` (whose block ended in an exception of its own), or
    once the stop requested (:func:`request`) whose exception never arrived."""
    kind, _state["held"] = _state["held"], None
    if kind is not None:
        raise kind()
    lost, _state["lost"] = _state["lost"], None
    if _state["requested"] is not None and not _state["delivered"]:
        _state["delivered"] = True
        raise _state["requested"]()
    if lost is not None:  # (a later stop, a second Ctrl-C, lost in a deallocator)
        raise lost()


def reset() -> None:
    _state["requested"] = _state["held"] = _state["lost"] = None
    _state["delivered"] = False


def raise_or_hold(kind: type[KeyboardInterrupt]) -> None:
    """Raise ``kind`` now, or, inside :func:`held` with no stop waiting yet, at the block's end
    (for a signal handler)."""
    if _state["depth"] and _state["held"] is None:
        _state["held"] = kind
        return
    raise kind()


def on_sigint(signum, frame) -> None:
    """A SIGINT handler: Ctrl-C as Python's own, except that :func:`held` blocks finish first,
    and that a KeyboardInterrupt lost on the way (raised in a C extension's deallocator) is
    raised again by :func:`check`."""
    request(KeyboardInterrupt)
    raise_or_hold(KeyboardInterrupt)


@contextlib.contextmanager
def held():
    """A block a stop does not cut short (with :func:`on_sigint` installed): one that arrives
    inside it is raised as the block ends."""
    _state["depth"] += 1
    try:
        yield
    except KeyboardInterrupt:
        _state["held"] = None  # (a second Ctrl-C, raised at once: the stop is under way)
        raise
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["held"] is not None:
        kind, _state["held"] = _state["held"], None
        raise kind()


@contextlib.contextmanager
def ctrl_c_held():
    """Within: Ctrl-C goes through :func:`on_sigint`, so that :func:`held` blocks finish first
    (where SIGINT has Python's own handler and this is the main thread; elsewhere nothing
    changes). On the way out what was requested is forgotten: the next run starts afresh."""
    install = _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, on_sigint) if install else None
    hook = sys.unraisablehook
    if install:
        sys.unraisablehook = _keep_lost_stops(hook)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = hook
            reset()


def _keep_lost_stops(hook):
    """An unraisable-exception hook that takes a stop raised where Python cannot pass it on (a
    C extension's deallocator: a ZeroMQ message freed) as lost, for :func:`check` to raise
    again, rather than printing "Exception ignored" and its traceback; others go to ``hook``."""
    def on_unraisable(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _state["lost"] = unraisable.exc_type
            return
        hook(unraisable)

    return on_unraisable


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def terminate_like_ctrl_c():
    """Make SIGTERM raise :class:`Terminated` in the main thread (held as Ctrl-C is), unless
    someone else handles it. Returns the handler it replaced (to be put back), or None where it
    installed none."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: closing the run file goes undisturbed
        request()  # should the exception be lost, the pipeline raises it again
        raise_or_hold(Terminated)

    return signal.signal(signal.SIGTERM, on_sigterm)


def quit_on_ctrl_c(code: int) -> None:
    """From now on a Ctrl-C ends the process at once with exit code ``code`` (for a command
    that has finished, its files written, while Python shuts down: a second Ctrl-C, pressed
    after the first had stopped the run, would otherwise interrupt the exit handlers of
    libraries, which print tracebacks)."""
    def quit_now(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    if _main_thread():
        signal.signal(signal.SIGINT, quit_now)
