"""The CPU thread rule (manualnn/training/threads.py) and its C++ twin (kernels/native/threads.h).

Step times come from a model of a machine (no timing here: tests never assert on time), so every
choice is deterministic: both twins must make the same choices step for step; the rule must pick the
faster count on an idle and on a loaded machine, follow a change of load, and cost little while it
looks; and a run's numbers must not depend on the threads its steps took."""
import os
import random
import subprocess
import sys

import pytest
import torch

import manualnn
from manualnn import seed_data
from manualnn.training import threads as th


def idle(n, step):           # two threads are faster: a large step on an idle machine
    return 180e-6 if n > 1 else 260e-6


def loaded(n, step):         # one other busy process: the second thread sometimes waits a whole time slice
    if n == 1:
        return 340e-6
    return 20e-3 if random.Random(step).random() < 0.15 else 360e-6


def load_comes_and_goes(n, step):
    return loaded(n, step) if 3000 <= step < 20000 else idle(n, step)


def near_the_margin(n, step):   # two threads about MARGIN faster, with noise: the choice flips now and then
    return (1.0 - th.MARGIN if n > 1 else 1.0) * 100e-6 * random.Random(step).uniform(0.9, 1.1)


def slightly_faster(n, step):   # two threads 10% faster: a change of count (CHANGE) costs about a step
    return 90e-6 if n > 1 else 100e-6


def virtual_machine(n, step):   # two threads 25% faster; one step in a hundred 2-5x slower on either count
    seconds = 230e-6 if n > 1 else 305e-6
    r = random.Random(step).random()
    return seconds * (1 + 400 * r) if r < 0.01 else seconds


# What a change of count costs the step after it (the other thread wakes, rows move between caches), to
# all threads and to one: measured on the digits step at H=512 (kernels/native, 2 cores).
CHANGE = (90e-6, 30e-6)


STEPS = 60000   # long enough to notice, at most ten seconds later, that the load went away


def drive(policy, model, steps, change=(0.0, 0.0), pause_every=0):
    """Run ``steps`` steps under ``model``: the counts chosen and the time they took. ``change``: the extra
    seconds of the step after a change of count (to all threads, to one); every ``pause_every`` steps the
    policy is told that the steps resume after 50 ms of other work (a chunk of epochs ends, another
    contender of a benchmark runs), and the step after it takes three times as long (memory untouched
    meanwhile); at the other steps, after 1 ms (an epoch's callback)."""
    chosen, total = [], 0.0
    for k in range(steps):
        paused = bool(pause_every) and k % pause_every == 0
        if pause_every:
            policy.resume(0.05 if paused else 0.001)
        n = policy.next()
        seconds = model(n, k) * (3 if paused else 1)
        if chosen and n != chosen[-1]:
            seconds += change[0] if n > 1 else change[1]
        policy.record(n, seconds, k % 9 != 8)   # every ninth step not compared (as a smaller last batch was)
        chosen.append(n)
        total += seconds
    return chosen, total


@pytest.fixture
def native_module(native_build, monkeypatch):
    from manualnn.backends import native_build as native
    monkeypatch.setenv(native.CACHE_ENV, native_build[0])
    return native.load()


@pytest.mark.parametrize("model", [idle, loaded, load_comes_and_goes, near_the_margin, virtual_machine])
def test_the_twins_choose_alike(native_module, model):
    python, native = th.ThreadPolicy(2), native_module.ThreadChooser(2, True)
    a, _ = drive(python, model, STEPS, CHANGE, pause_every=1000)
    b, _ = drive(native, model, STEPS, CHANGE, pause_every=1000)
    first = next((k for k, (p, q) in enumerate(zip(a, b)) if p != q), None)
    assert first is None, f"the twins part at step {first}"
    assert python.best == native.best


@pytest.mark.parametrize("model,best", [(idle, 2), (loaded, 1)])
def test_the_faster_count_is_kept_and_looking_costs_little(model, best):
    policy = th.ThreadPolicy(2)
    chosen, total = drive(policy, model, 5000)
    fixed = min(drive(th.ThreadPolicy(n, adapt=False), model, 5000)[1] for n in (1, 2))
    print(f"{model.__name__}: {total / fixed:.4f} of the better fixed count; {chosen.count(best)} of 5000 steps "
          f"on {best}")
    assert policy.best == best and chosen[-1000:].count(best) >= 960
    assert total <= (1.02 if model is idle else 1.05) * fixed


@pytest.mark.parametrize("two,best", [(0.97, 1), (0.90, 2)])
def test_all_threads_must_be_clearly_faster(native_module, two, best):
    """A near tie goes to one thread (its costs outside the timed steps are not in their times); a clear
    lead to all threads; the twins alike."""
    def model(n, step):
        return (two if n > 1 else 1.0) * 100e-6
    for policy in (th.ThreadPolicy(2), native_module.ThreadChooser(2, True)):
        chosen, _ = drive(policy, model, 2000)
        assert policy.best == best and chosen[-500:].count(best) >= 490


@pytest.mark.parametrize("model,pause_every", [(idle, 160), (virtual_machine, 160), (slightly_faster, 0),
                                               (slightly_faster, 160)])
def test_changing_count_pausing_and_a_slow_step_now_and_then_are_not_held_against_a_count(model, pause_every):
    """The step after a change of count or a pause pays for it, and a step of the machine's that is slow
    for no reason of the count's lands in one count's window: none of it may keep the run from the faster
    count (the benchmark's default run took one thread for half its steps before the rule knew this)."""
    policy = th.ThreadPolicy(2)
    chosen, total = drive(policy, model, 20000, CHANGE, pause_every)
    fixed = drive(th.ThreadPolicy(2, adapt=False), model, 20000, CHANGE, pause_every)[1]
    print(f"{model.__name__}: {total / fixed:.4f} of two threads fixed; {chosen.count(2)} of 20000 steps on two")
    assert chosen.count(2) >= 0.98 * 20000 and total <= 1.01 * fixed


def test_a_pause_before_every_step_still_decides(native_module):
    """A callback of over PAUSE after every one-step epoch: every step follows a pause, and half of them are
    timed (none were, and the rule kept one thread for good while reporting all)."""
    for policy in (th.ThreadPolicy(2), native_module.ThreadChooser(2, True)):
        chosen = []
        for k in range(2000):
            policy.resume(1.0)
            n = policy.next()
            policy.record(n, idle(n, k), True)
            chosen.append(n)
        assert policy.decided and policy.best == 2 and chosen[-1000:].count(2) >= 950


def test_a_probe_that_times_no_step(native_module):
    """A probe may time none of its steps (the first after the change is not timed; star98's epoch is a full
    batch and a smaller one, and a pause may come between): the next look is then set without its times,
    alike in both twins (the mean of no times was a division by zero)."""
    runs = []
    for policy in (th.ThreadPolicy(2), native_module.ThreadChooser(2, True)):
        chosen = drive(policy, idle, 300)[0]
        for k in range(3000):   # from here no step is comparable
            n = policy.next()
            policy.record(n, idle(n, k), False)
            chosen.append(n)
        runs.append(chosen)
    assert runs[0] == runs[1] and runs[0][-3000:].count(1) > 0   # probes went on


def test_a_change_of_load_is_followed():
    policy = th.ThreadPolicy(2)
    chosen, _ = drive(policy, load_comes_and_goes, STEPS)
    assert chosen[2000:3000].count(2) > 900            # idle: two threads
    came = next(k for k in range(3000, STEPS) if chosen[k] == 1)
    assert came < 3100 and chosen[came:20000].count(1) > 0.99 * (20000 - came)   # loaded: one, found at once
    went = next(k for k in range(20000, STEPS) if chosen[k:k + 50].count(2) >= 45)
    seconds = sum(loaded(1, k) for k in range(20000, went))
    print(f"the load came at step 3000, one thread from step {came}; it went at 20000, two threads again from "
          f"step {went} ({seconds:.1f} s later)")
    assert seconds <= 1.1 * th.PROBE_EVERY and chosen[-2000:].count(2) > 1900   # idle again: back to two


def test_one_thread_or_no_adapting_keeps_the_count():
    assert set(drive(th.ThreadPolicy(1), idle, 50)[0]) == {1}
    assert set(drive(th.ThreadPolicy(4, adapt=False), loaded, 50)[0]) == {4}


def test_same_results_looks_at_every_product_and_remembers(monkeypatch):
    from manualnn.spec import StepSpec
    products, dots = th.step_products([5, 7, 3], [4, 2], StepSpec(loss="sse", optimizer="adam"), bias=True)
    assert (False, False, 4, 7, 6, 1.0, 0.0) in products and (True, False, 6, 7, 4, 1.0, 0.0) in products
    assert (False, True, 2, 7, 3, 1.0, 0.0) in products and (False, False, 2, 3, 8, 1.0, -1.0) in products
    assert (False, False, 2, 3, 8, 1.0, 0.0) in products   # the native validation pass's outputs, for "sse" too
    assert dots == [6, 12]
    folded, no_dots = th.step_products([5, 3], [4], StepSpec(lr=0.1, loss="ce"), bias=False)
    assert (True, False, 5, 3, 4, -0.1, 1.0) in folded and no_dots == []
    monkeypatch.setattr(th, "_same", {})
    assert th.same_results(products, dots, 2)           # products this small are never split
    real_addmm = torch.addmm
    calls = []

    def thread_dependent(c, a, b, **kw):   # a BLAS whose sums depend on the thread count
        calls.append(1)
        return real_addmm(c, a, b, **kw) + (torch.get_num_threads() - 1) * 1e-3
    monkeypatch.setattr(th.torch, "addmm", thread_dependent)
    assert not th.same_results(products[:1], dots, 2)
    assert th.same_results(products, dots, 2) and len(calls) == 2   # the earlier answer, remembered


def test_the_thread_rule_checks_the_batch_sizes_the_epoch_takes(monkeypatch):
    # 437 rows by 200 are batches of 146, 146 and 145 rows: those are the products whose sums must not depend
    # on the thread count (not 200 and 37, which this run never steps)
    x, y, w = seed_data(4, batch=437, features=6, hidden=(9,), out=3)
    seen, real = [], th.step_products
    monkeypatch.setattr(th, "step_products", lambda sizes, rows, *rest: seen.append(rows) or real(sizes, rows, *rest))
    th.thread_rule(manualnn.Trainer(x, y, w, lr=1e-3, batch_size=200, backend="torch", threads=1))
    assert seen == [[145, 146]]


def digits_like():
    x, y, w = seed_data(4, batch=300, features=64, hidden=(96,), out=10, init="kaiming")
    return x, y.argmax(1), w


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_the_thread_count_never_changes_a_result(backend):
    """Where the rule may adapt (same_results), a run on one thread and on two gives the same bits."""
    x, y, w = digits_like()
    options = dict(lr=3e-3, bias=True, loss="ce", reduction="mean", optimizer="adam", batch_size=64, backend=backend,
                   val_data=(x[:50], y[:50]), patience=5)
    trainer = manualnn.Trainer(x[50:], y[50:], w, **options)
    if trainer.device.type != "cpu" or th.thread_rule(trainer) != (2, True):
        pytest.skip("this machine's BLAS sums these products by thread count: the rule keeps one count here")
    results = [manualnn.train(x[50:], y[50:], w, epochs=6, threads=n, **options) for n in (1, 2)]
    one, two = results
    assert one.losses == two.losses and one.val_losses == two.val_losses
    assert all(torch.equal(a, b) for a, b in zip(one.weights + one.biases, two.weights + two.biases))


def test_steps_choose_threads_but_callbacks_and_the_caller_keep_theirs(monkeypatch):
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("one core: there is no other count to choose")

    class OneThread(th.ThreadPolicy):   # steps on one thread, whatever their times
        def next(self):
            return 1
    monkeypatch.setattr("manualnn.training.epoch.ThreadPolicy", OneThread)
    x, y, w = digits_like()
    seen, inside = [], []
    from manualnn.backends.torch_backend import TorchStep
    real_step = TorchStep._step   # what step() runs on the CPU
    monkeypatch.setattr(TorchStep, "_step", lambda self, out: (inside.append(torch.get_num_threads()),
                                                               real_step(self, out)))
    manualnn.train(x, y, w, epochs=3, bias=True, batch_size=100, backend="torch", every=1,
                   callback=lambda *_: seen.append(torch.get_num_threads()))
    assert set(inside) == {1} and seen == [before] * 3 and torch.get_num_threads() == before
    manualnn.train(x, y, w, epochs=3, bias=True, batch_size=100, every=1,
                   callback=lambda *_: seen.append(torch.get_num_threads()))
    assert seen[3:] == [before] * 3 and torch.get_num_threads() == before


@pytest.mark.parametrize("code,env,want", [   # (torch after manualnn changes nothing here: not imported, 1.5 s each)
    ("import manualnn", {}, "10000"),                        # the command line's order: libgomp reads it as torch loads
    ("import torch, manualnn", {}, "None"),                  # too late to matter: left alone
    ("import manualnn", {"GOMP_SPINCOUNT": "5"}, "5"),                       # the user's own, kept
    ("import manualnn", {"OMP_WAIT_POLICY": "active"}, "None"),              # the user's policy, not overridden
])
def test_openmp_threads_spin_briefly_where_manualnn_comes_first(code, env, want):
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", f"{code}; import os; print(os.environ.get('GOMP_SPINCOUNT'))"],
                         env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want
