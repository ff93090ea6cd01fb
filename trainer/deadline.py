"""A wall-clock limit on a call: ``call_with_deadline(fn, seconds)`` raises :class:`Expired` in
the calling thread when ``fn`` has not returned in time.

A watchdog thread sends SIGINT to the main thread when the time is up, and the handler installed
for the call raises :class:`Expired`. A signal, unlike an exception set from another thread
(``PyThreadState_SetAsyncExc``), also interrupts a blocking system call such as ``time.sleep`` or
a socket read: Python runs the handler and the call raises (PEP 475). :class:`Expired` derives
from BaseException, as KeyboardInterrupt does, so that a callable's ``except Exception`` cannot
swallow it. A SIGINT the watchdog did not send (Ctrl-C) goes to the handler installed before.

Written by hand because the libraries that do this (timeout-decorator, stopit, func-timeout)
use either ``signal.alarm``, which math-verify resets and then cancels around each of its own
calls (math_verify/utils.py:58-67), or a worker thread, in which math-verify refuses to run
(math_verify/parser.py:709-713): math-verify is one of the trainer's rewards.

Limits: only the main thread receives signals, so from any other thread ``fn`` runs without a
limit; code that does not return to the interpreter (a C extension's long loop) is interrupted
only when it does.
"""

from __future__ import annotations

import signal
import threading
import time


class Expired(BaseException):
    """The deadline of :func:`call_with_deadline` passed before the call returned."""


def call_with_deadline(fn, seconds: float):
    """``fn()``, or :class:`Expired` raised after ``seconds`` (see the module docstring)."""
    main = threading.main_thread()
    if threading.current_thread() is not main:
        return fn()
    state = {"fired": False, "handled": False, "done": False}
    lock = threading.Lock()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        if state["fired"]:
            state["handled"] = True
            raise Expired
        if callable(previous):
            return previous(signum, frame)
        if previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                signal.pthread_kill(main.ident, signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            timer.start()  # inside the try: the watchdog may fire before the next line runs
            return fn()
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
            while state["fired"] and not state["handled"]:  # a signal sent as fn returned: take it here
                time.sleep(0.001)
    finally:
        signal.signal(signal.SIGINT, previous)
