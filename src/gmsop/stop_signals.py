"""Stop signals reach the training process, never kill its loader processes.

Terminals and schedulers signal every process of a job: Ctrl-C sends SIGINT to the whole
foreground process group, SLURM signals every process of a job step (`scancel`, preemption,
`--signal=USR1@90`), `kill -- -PGID` and several container runtimes do the same. DataLoader
worker processes took the default action and died, and the training process then failed with
"DataLoader worker ... is killed by signal" before it could save.

So the training process decides. Loader processes ignore the stop signals (SIGTERM, SIGINT,
SIGUSR1, SIGHUP) and pass one that reached them on to their training process as a real-time
signal (`forwarded(signum)`), which the run's interrupt handler treats as its own signal unless
it is already stopping: a group Ctrl-C then counts once, not as the second press that stops at
once. Between its fork and its own handlers a loader process runs the training process's
handlers, copied with it (Python's: they only take note), so no signal kills it there either:
loader processes start after the run has installed its handlers.

A loader process forwards only while the run it was started for takes forwarded signals: a
byte of memory shared with it (`_run_taking`) says so. One process can hold several runs in turn
(a sweep, a multirun, a resumed run after a stopped one); a persistent loader process of an
earlier run, which torch terminates with SIGTERM once its loader is collected, must not stop
whichever run is going on by then.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, Optional

from torch.utils.data import DataLoader

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
EXIT_CODES = {s.name: 128 + int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)} | {"SIGUSR1": 143}

# In a training process that takes forwarded signals: its pid (forked loader processes inherit it)
_forward_to: Optional[int] = None
# ...and the byte, shared with those loader processes, that is 1 while their run takes them
_run_taking: Optional[mmap.mmap] = None


def forwarded(signum: int) -> int:
    """The real-time signal a loader process sends its training process for `signum`."""
    return signal.SIGRTMIN + STOP_SIGNALS.index(signum)


def original(forwarded_signum: int) -> signal.Signals:
    """The stop signal a forwarded real-time signal stands for."""
    return signal.Signals(STOP_SIGNALS[forwarded_signum - signal.SIGRTMIN])


def take_forwarded_signals(handler: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """In the training process: call handler(original signal) when a loader process forwards one.
    Returns the function that stops taking them (forwarded signals are ignored from then on: a
    persistent loader process may still send one while the run shuts down, and loader processes
    started before this call never forward to this handler)."""
    global _forward_to, _run_taking
    if _run_taking is not None:  # an earlier run that did not stop taking: its loaders stop forwarding
        _run_taking[0] = 0
    taking = mmap.mmap(-1, 1)  # anonymous and shared: loader processes forked from here on see it
    taking[0] = 1
    for signum in STOP_SIGNALS:
        signal.signal(forwarded(signum), lambda rt, frame: handler(original(rt)))
    _forward_to, _run_taking = os.getpid(), taking

    def stop() -> None:
        global _forward_to, _run_taking
        taking[0] = 0
        if _run_taking is taking:  # (not when a later run has taken them since)
            _forward_to, _run_taking = None, None
            for signum in STOP_SIGNALS:
                signal.signal(forwarded(signum), signal.SIG_IGN)

    return stop


def _forward(signum: int, frame: Any) -> None:
    """A loader process's handler: pass the signal on to its training process if the run it was
    started for still takes them (a loader process outliving its parent, or its run, sends nothing)."""
    if _run_taking is not None and _run_taking[0] == 1 and os.getppid() == _forward_to:  # (set with _forward_to)
        os.kill(_forward_to, forwarded(signum))


class _LoaderProcessInit:
    """A loader process's first step: forward stop signals (then unblock them), seed as Lightning
    would, then the loader's own init function if it has one. (A class: loaders pickle it.)"""

    def __init__(self, rank: int, user_init: Optional[Callable[[int], None]]) -> None:
        self.rank, self.user_init = rank, user_init

    def __call__(self, worker_id: int) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _forward)
        if os.environ.get("PL_SEED_WORKERS") == "1":  # what Lightning adds to loaders without an init function
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id, rank=self.rank)
        if self.user_init is not None:
            self.user_init(worker_id)


class StopSignalSafeLoader(DataLoader):
    """A DataLoader whose worker processes never die on a stop signal (see the module docstring).

    `rank`: the process's global rank, for Lightning's per-worker seeding (it adds its own init
    function only to loaders without one, so this one calls it)."""

    def __init__(self, *args: Any, rank: int = 0, **kwargs: Any) -> None:
        init = kwargs.pop("worker_init_fn", None)
        if not isinstance(init, _LoaderProcessInit):  # (Lightning may rebuild a loader from its arguments)
            init = _LoaderProcessInit(rank, init)
        super().__init__(*args, worker_init_fn=init, **kwargs)


class Stopped(BaseException):
    """A stop signal ended a command that has nothing to save (evaluation, export, the finder, a
    report): raised at once from the signal handler, so nothing after it is written. A
    BaseException, like KeyboardInterrupt: no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        self.exit_code = 128 + int(signum)
        super().__init__(self.signal.name)


ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_signals_end(
    what: str, left: str = "nothing of it was written"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command's main: while it runs, SIGTERM, SIGINT or SIGHUP (to it, or to one of its
    loader processes, which pass it on) raise Stopped at once; the command then says on stderr that
    `what` was stopped and what is `left`, and exits 128 + the signal's number (as gmsop.train does).
    Files are written atomically (gmsop.paths), so none is left half written, and temporary folders
    are removed on the way out. Lightning composes its own SIGTERM handler with this one (it only
    notes the signal), so the stop is immediate inside a Trainer too."""

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            def stop(signum: int, frame: Any = None) -> None:
                raise Stopped(signum)

            previous = {s: signal.signal(s, stop) for s in ENDING_SIGNALS}
            stop_forwarding = take_forwarded_signals(lambda s: stop(s) if s in ENDING_SIGNALS else None)
            try:
                return main(*args, **kwargs)
            except Stopped as e:
                said = f"\nstopped by {e.signal.name}: {what} did not finish; {left}"
                print(said, file=sys.stderr)
                sys.exit(e.exit_code)
            finally:
                stop_forwarding()
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

        return wrapper

    return decorate


@contextlib.contextmanager
def stop_signals_wait() -> Iterator[None]:
    """Hold the stop signals back for a short section that must not be cut (writing a command's
    result files: all or none); one that came meanwhile is acted on when it ends."""
    hold_stop_signals()
    try:
        yield
    finally:
        release_stop_signals()


# While stop signals are held (hold_stop_signals): the handlers they replaced, and the signals that came.
_held_handlers: dict[int, Any] = {}
_held_back: list[int] = []


def hold_stop_signals() -> None:
    """Hold SIGTERM, SIGINT and SIGHUP back until release_stop_signals: each is only noted. (Python
    handlers, not a signal mask: a mask is per thread, and the kernel gives a process's signal to any
    thread that does not block it, whose default action then ends the whole process.)"""
    if _held_handlers:
        return
    for signum in ENDING_SIGNALS:
        _held_handlers[signum] = signal.signal(signum, lambda s, frame: _held_back.append(s))


def release_stop_signals() -> None:
    """Take the stop signals again, with the handlers they had; the first held back meanwhile is
    raised now, to those handlers."""
    for signum, handler in _held_handlers.items():
        signal.signal(signum, handler)
    _held_handlers.clear()
    if _held_back:
        signum = _held_back[0]
        _held_back.clear()
        signal.raise_signal(signum)
