"""How many threads a CPU run's steps use: chosen by timing them, on this machine, under its load now.

torch's threads wait for each other at every GEMM. On an idle machine two threads make a large step
faster; with one other busy process on a two-core machine the second thread waits for a core at some
barriers, for a whole scheduler slice, and the run becomes several times slower than on one thread
(measured: the README's CPU benchmark). No fixed size threshold is right on every machine and under
every load, so ``ThreadPolicy`` measures instead, step by step: it times steps with one thread and with
all (the count torch had when the run began, the user's setting), keeps the faster, and tries the other
again now and then: as often as costs about 1% of the run (rarely when it is much slower), ever more
rarely while the choice holds, and at least every ten seconds (a load that went away is noticed). The
chosen count's own steps are timed all along, so a load that comes is seen at once. It compares means,
not medians: under load most steps are quick and a few take milliseconds, and the few decide the time.
It times one thread first (the safe choice on a busy machine), three steps, then all threads, and
decides after one step of theirs when either count is three times slower than the other.

What a step pays for other than its count is kept out of the comparison, because it decided too much:
- The step right after a change of count is not timed, nor the first after a pause (``resume()``: more
  than PAUSE seconds of other work), unless the step before was not timed either (where every step
  follows a pause, half are timed rather than none). It pays for the change (the other thread wakes from
  its sleep, the rows move between the cores' caches: a digits step at H=512 took 60-100 µs more on two
  threads right after one-thread steps, 20-50 more on one thread after two) or for memory untouched
  meanwhile.
- The mean is over the last WINDOW steps of a count. Over four, one slow step of the machine's (a virtual
  machine's pause: 2-5x, about one step in a hundred, on either count alike) dropped the chosen count,
  and the probe's extra time, inflated by it, kept the run away from it for a hundred steps.
  With both, the benchmark's default path ran one thread for half its steps, 15% slower than two threads
  fixed (benchmarks/cpu.py, H=512, B=200); tests/test_threads.py models both.
- All threads must be MARGIN faster than one to be chosen: their costs outside the timed steps (the
  validation pass; before batches were even, a smaller last batch) are not in those times, and a near
  tie flipped back and forth (star98's 200-row steps took 133 µs on two threads and 134 on one; its
  27-row last batch 45 against 31). Once
  chosen they are kept while they are MARGIN - HOLD faster: noise around one line flipped the count at
  many probes, each change costing its untimed step.

The same rule is written twice, as the project writes its kernels: here for the torch backend's
steps, and in C++ for the native runner (kernels/native/threads.h, ``ThreadChooser``), which decides
inside its epoch loop; tests/test_threads.py feeds both the same step times and requires the same
choices. Every step of the epoch's batches is compared (they are even: their rows differ by one at most),
but not the run's first step (it pays for first touches).

A choice of threads must never change a result: the same run gives the same numbers, whatever the load.
BLAS splits some products over their inner dimension when it has several threads (the seed's 100 x 1000
@ 1000 x 100, a dot of a million elements), and then the sums are added in another order; and it applies
an alpha or a beta that is not a power of two in another place (other rounding). So the steps scale the
output error instead of the products' alpha, and ``same_results`` tries each product a step makes with
one thread and with all, once per process; where any differs (the seed's, plain SGD's update folded into
its product), the run keeps torch's own count (``adapt=False``: its numbers are what torch gives).
"""
import contextlib
import math

import torch

from .batches import batch_sizes

SAMPLES = 3          # comparable steps of each count before the first choice
WINDOW = 16          # the steps each count's mean is taken over (the latest)
PROBE = 3            # steps of the other count per probe (its earlier times forgotten; the first not timed)
COST = 0.01          # the share of the run that probing may cost
GAP_LEAST = 8        # steps between probes, at least
PROBE_EVERY = 10.0   # seconds between probes, at most (a load that went away is noticed)
CLEAR_LOSER = 3.0    # a count whose mean is this many times the other's loses before SAMPLES steps
MARGIN = 0.05        # all threads are chosen only where their mean is this much below one thread's
HOLD = 0.03          # and, once chosen, kept while it stays MARGIN - HOLD below (a near tie does not flip)
PAUSE = 0.01         # seconds of other work between steps after which the next step is not timed


@contextlib.contextmanager
def cpu_threads(n):
    """torch's intra-op threads set to ``n`` for the block (None: left alone), then restored."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ThreadPolicy:
    """Chooses each step's thread count: ``most`` (default torch's count now) or one. ``adapt=False``
    keeps ``most``. Per step: ``n = next()``, then ``record(n, seconds, comparable)``. ``best`` is the
    current choice (for work outside the steps, such as the validation pass)."""

    def __init__(self, most=None, adapt=True):
        self.most = int(most or torch.get_num_threads())
        self.adapt = adapt and self.most > 1
        self.samples = {self.most: [], 1: []}
        self.best, self.decided = self.most, False
        self.countdown, self.probe_left, self.last_gap = 0, 0, 0
        self.last = None   # the previous step's count (None: no step yet, or a pause since)
        self.skipped = False   # the last comparable step was not timed (it followed a change or a pause)

    def mean(self, n):
        total = 0.0
        for v in self.samples[n]:   # added in order, as the C++ twin adds them (sum() compensates from 3.12)
            total += v
        return total / len(self.samples[n])

    @property
    def other(self):
        return 1 if self.best == self.most else self.most

    def next(self):
        """The thread count for the next step."""
        if not self.adapt:
            return self.most
        if not self.decided:   # one thread first, then all (each change costs a step that is not timed)
            return 1 if len(self.samples[1]) < SAMPLES else self.most
        if self.probe_left > 0:
            self.probe_left -= 1
            return self.other
        if self.countdown <= 0:
            self.probe_left, self.countdown = PROBE - 1, self.gap()
            self.samples[self.other].clear()   # judged on fresh steps: the load may have changed
            return self.other
        self.countdown -= 1
        return self.best

    def gap(self):
        """Steps until the next probe: long enough that a probe (PROBE steps of the other count's extra time)
        costs at most COST of the run, and twice the last gap while the choice holds (a few steps cannot
        show the rare slow ones of a loaded count); at most PROBE_EVERY seconds."""
        best = self.mean(self.best)
        if best <= 0:
            return GAP_LEAST
        # none of the other's: a probe timed no step
        extra = (self.mean(self.other) - best) / best if self.samples[self.other] else 0.0
        steps = max(GAP_LEAST, math.ceil(PROBE * extra / COST), 2 * self.last_gap)
        self.last_gap = min(steps, math.ceil(PROBE_EVERY / best))
        return self.last_gap

    def resume(self, idle):
        """Steps resume after ``idle`` seconds of other work (a chunk of epochs returned to its caller): after
        more than PAUSE, the next step's time is not compared (memory untouched meanwhile)."""
        if idle > PAUSE:
            self.last = None

    def record(self, n, seconds, comparable=True):
        """A step's thread count and its time in seconds; ``comparable``: a step of the full batch size."""
        settling, self.last = n != self.last, n   # the first step, or the first after a change or a pause
        if not self.adapt or not comparable:
            return
        if settling and not self.skipped:   # not timed, unless the one before was not either (every step
            self.skipped = True             # after a pause: a callback of over PAUSE after every epoch)
            return
        self.skipped = False
        window = self.samples[n]
        window.append(seconds)
        del window[:-WINDOW]
        many, one = len(self.samples[self.most]), len(self.samples[1])
        if not self.decided:
            if min(many, one) >= SAMPLES or (min(many, one) >= 1 and self._clear_loser()):
                self.decided = True
                self._choose(self._fastest(MARGIN))
            return
        if many and one:   # all threads, once chosen, are kept while they are MARGIN - HOLD faster
            fastest = self._fastest(MARGIN - HOLD if self.best == self.most else MARGIN)
            if fastest != self.best:
                self._choose(fastest)

    def _fastest(self, margin):
        return self.most if self.mean(self.most) < (1 - margin) * self.mean(1) else 1

    def _clear_loser(self):
        a, b = self.mean(self.most), self.mean(1)
        return a >= CLEAR_LOSER * b or b >= CLEAR_LOSER * a

    def _choose(self, best):
        self.best, self.last_gap = best, 0
        self.countdown, self.probe_left = self.gap(), 0


def step_products(sizes, batch_rows, spec, bias):
    """Every matrix product of a training step, as (trans_a, trans_b, m, n, k, alpha, beta) of a row-major
    ``C[m, n] = alpha * op(A) @ op(B) + beta * C``, for batches of each size in ``batch_rows`` (the
    validation pass's blocks included), as both CPU backends compute them; and the lengths of the loss's
    dot products. ``sizes``: [in, hidden..., out]; ``spec``: the StepSpec."""
    update = (-spec.lr, 1.0 - spec.lr * spec.weight_decay) if spec.folds_sgd(bias) else (1.0, 0.0)   # p, or grad
    products, extra = set(), 1 if bias else 0
    for rows in set(batch_rows):
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            out_beta = -1.0 if last and spec.loss == "sse" else 0.0            # e = z - y is y's buffer
            products.add((False, False, rows, fan_out, fan_in + extra, 1.0, out_beta))   # [h, 1] @ p
            products.add((False, False, rows, fan_out, fan_in + extra, 1.0, 0.0))        # native scoring: z
            products.add((False, False, rows, fan_out, fan_in, 1.0, 1.0 if bias else 0.0))   # scoring: h @ w + b
            products.add((True, False, fan_in + extra, fan_out, rows) + update)          # [h, 1]^T @ g
            if i > 0:
                products.add((False, True, rows, fan_in, fan_out, 1.0, 0.0))           # g @ w^T
    dots = {rows * sizes[-1] for rows in set(batch_rows)} if spec.loss == "sse" else set()
    return sorted(products), sorted(dots)


SCORE_BLOCK = 1024   # validation rows per forward pass, as the native runner scores them (its SCORE_BLOCK)
_same = {}   # (products, dots, most, dtype) -> answer: once per process


@torch.no_grad()
def same_results(products, dots, most, dtype=torch.float32):
    """True when every product (see ``step_products``) and every dot of these lengths gives bitwise the same
    result with one thread as with ``most``. Answered once per process for each set of shapes."""
    if most <= 1:
        return True
    key = (tuple(products), tuple(dots), most, dtype)
    if key not in _same:
        gen = torch.Generator().manual_seed(0)
        rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
        cases = [(rand(m, n), rand(k, m).t() if ta else rand(m, k), rand(n, k).t() if tb else rand(k, n), alpha, beta)
                 for ta, tb, m, n, k, alpha, beta in products]
        vectors = [rand(n) for n in dots]
        results = []
        for threads in (1, most):
            with cpu_threads(threads):
                results.append([torch.addmm(c, a, b, alpha=alpha, beta=beta) for c, a, b, alpha, beta in cases]
                               + [torch.dot(v, v) for v in vectors])
        _same[key] = all(torch.equal(a, b) for a, b in zip(*results))
    return _same[key]


def thread_rule(trainer):
    """(most, adapt) for a CPU Trainer's ThreadPolicy: one thread or torch's count, chosen by timing, where
    both give the same numbers for its step's products (a distributed rank keeps its count: the ranks'
    steps wait for each other)."""
    most = torch.get_num_threads()
    if trainer.distributed:
        return most, False
    sizes = [trainer.x.shape[1]] + [w.shape[1] for w in trainer.params.weights]
    n, b = trainer.rows, trainer.batch_size
    batch_rows = sorted(set(batch_sizes(n, b)))   # the epoch's batches: one size, or two a row apart
    if trainer.scorer:   # the validation pass: all its rows at once, or the native runner's blocks of them
        v = trainer.scorer.rows
        blocks = [min(v, SCORE_BLOCK)] + ([v % SCORE_BLOCK] if v > SCORE_BLOCK and v % SCORE_BLOCK else [])
        batch_rows += blocks if trainer.backend_name == "native" else [v]
    if trainer.backend_name == "native":   # its passes that keep BLAS on one thread cannot differ by the count
        from ..backends import native_build
        one_thread = native_build.load().one_blas_thread
        params = sum(t.numel() for t in trainer.params.tensors)
        fold = trainer.spec.folds_sgd(trainer.params.bias)
        batch_rows = [rows for rows in batch_rows if not one_thread(rows, params, fold)]
    products, dots = step_products(sizes, batch_rows, trainer.spec, trainer.params.bias)
    return most, same_results(products, dots, most, trainer.x.dtype)
