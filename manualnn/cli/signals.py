"""How ``manualnn train`` is stopped without losing a finished epoch: SIGINT, SIGTERM, SIGHUP and a
closed stdout.

A signal stops the run at once only while the trainer is inside its device work (the functions
given to ``Signals``), which the trainer undoes on any exception, back to the last finished epoch.
Anywhere else (the trainer's bookkeeping between epochs, where the epoch counter, the histories and
the weights are updated one after another) it is recorded and raised at the next safe point, after
a chunk's report (``raise_if_received``). Inside ``held()`` (an epoch's lines, a save, the final
writes) it only waits. A signal ignored when the run started (``nohup``, a background job's SIGINT)
stays ignored.
"""
import contextlib
import errno
import os
import signal
import sys

# signal: (its name in messages, the exit status: 128 + its number, as a shell reports it)
SIGNALS = {signal.SIGINT: ("Ctrl-C", 130), signal.SIGTERM: ("SIGTERM", 143), signal.SIGHUP: ("SIGHUP", 129)}
STDOUT_CLOSED = 141   # 128 + SIGPIPE: what '| head' gives a Unix tool


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop: ``name`` says by what (in messages), ``code`` is the exit status."""

    def __init__(self, name, code):
        super().__init__(name)
        self.name, self.code = name, code


def interrupted_by(signum):
    return Interrupted(*SIGNALS[signum])


class Signals:
    """SIGINT, SIGTERM and SIGHUP as ``Interrupted``, raised only where it is safe (see the module)."""

    def __init__(self, device_work=()):
        self.device_work = frozenset(device_work)   # code objects
        self.depth, self.received, self.previous = 0, None, {}

    def __enter__(self):
        for sig in SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:
                self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.received is None:   # the first signal names the interruption
            self.received = signum
        if not self.depth and self._in_device_work(frame):
            raise interrupted_by(signum)

    def _in_device_work(self, frame):
        while frame is not None:
            if frame.f_code in self.device_work:
                return True
            frame = frame.f_back
        return False

    def raise_if_received(self):
        """A safe point: a signal that arrived since the last one stops the run here."""
        if self.received is not None:
            raise interrupted_by(self.received)

    @contextlib.contextmanager
    def held(self):
        """Signals arriving in the block are only recorded (raise_if_received raises them later)."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


def print_lines(lines):
    """Print to stdout; a stdout that cannot be written (its reader went away, as with '| head', or
    its terminal hung up) stops the run like a signal, with exit status 141."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except OSError as e:
        silence_stdout()
        reason = "its reader went away" if e.errno == errno.EPIPE else e.strerror or str(e)
        raise Interrupted(f"stdout closed: {reason}", STDOUT_CLOSED) from None


def silence_stdout():
    """Point stdout at /dev/null, so that later prints and the flush at exit do not fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def say(text):
    """A line on stderr, ``manualnn train: TEXT``; a stderr that is gone (a closed terminal) is skipped."""
    with contextlib.suppress(OSError):
        print(f"manualnn train: {text}", file=sys.stderr, flush=True)
