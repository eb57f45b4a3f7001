"""Per-phase time limits that interrupt a plugin stuck in Python code.

On the main thread (where the Triton 2.51 stub runs ``initialize`` and ``execute``) a one-shot
``SIGALRM`` timer raises :class:`PhaseTimeout` in the plugin; this also interrupts blocking calls
that retry on EINTR, such as ``time.sleep``. On any other thread a watchdog thread raises it
asynchronously (``PyThreadState_SetAsyncExc``), which takes effect at the plugin's next Python
bytecode. Neither can interrupt native code that never returns to Python: that is left to the
process that supervises Triton. Nothing here kills or signals another process.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimeout(BaseException):
    """The running phase exceeded its limit (``except Exception`` in a plugin does not catch it)."""


class Limit:
    """One armed limit; ``fired`` tells whether the timeout was delivered (even if swallowed)."""

    __slots__ = ("fired", "seconds", "started")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.fired = False

    @property
    def exceeded(self) -> bool:
        return self.fired or time.monotonic() - self.started > self.seconds


class Deadlines:
    """Arms a limit around one phase call: ``with deadlines.limit(5.0) as limit: ...``."""

    def __init__(self) -> None:
        self._armed: Limit | None = None
        self._watchdog: _Watchdog | None = None

    @contextmanager
    def limit(self, seconds: float) -> Iterator[Limit]:
        limit = Limit(seconds)
        if threading.current_thread() is threading.main_thread():
            with self._alarm(limit):
                yield limit
        else:
            if self._watchdog is None:
                self._watchdog = _Watchdog()
            with self._watchdog.armed(limit):
                yield limit

    @contextmanager
    def _alarm(self, limit: Limit) -> Iterator[None]:
        def on_alarm(signum: int, frame: object) -> None:
            if self._armed is limit and not limit.fired:
                limit.fired = True
                raise PhaseTimeout

        previous = signal.signal(signal.SIGALRM, on_alarm)
        # SA_RESTART: should the kernel hand the alarm to one of the stub's C++ threads, its system
        # calls resume instead of failing with EINTR (sleeps in Python are still interrupted)
        signal.siginterrupt(signal.SIGALRM, False)
        outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, limit.seconds)
        self._armed = limit
        try:
            yield
        finally:
            self._armed = None
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer_delay > 0:  # someone else's timer (a test runner's, say): give it back
                remaining = max(outer_delay - (time.monotonic() - limit.started), 0.001)
                signal.setitimer(signal.ITIMER_REAL, remaining, outer_interval)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class _Watchdog:
    """One daemon thread that raises PhaseTimeout in the thread whose limit expired."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._limit: Limit | None = None
        self._thread_id = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ruth-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def armed(self, limit: Limit) -> Iterator[None]:
        with self._cond:
            self._limit, self._thread_id = limit, threading.get_ident()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._limit = None
                if limit.fired:  # delivered or still pending: make sure it cannot surface later
                    _set_async_exc(self._thread_id, ctypes.py_object())

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                limit = self._limit
                if limit is None or limit.fired:
                    self._cond.wait()
                    continue
                left = limit.started + limit.seconds - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                limit.fired = True
                _set_async_exc(self._thread_id, ctypes.py_object(PhaseTimeout))

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=1)
