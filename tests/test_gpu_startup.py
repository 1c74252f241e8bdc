"""What the GPU's start-up costs, proven on the CPU: compiles and autotuning.

- A captured chunk (a CUDA graph; on the CPU graphs.RecordedChunk records the same calls) must
  launch nothing that the eager warm-up epoch did not compile: a compile during a CUDA graph
  capture fails it. Triton compiles a kernel per specialization key (argument types, 16-byte
  alignment of pointers, integer divisibility); the keys come from Triton's own binder, for sm_90.
- The per-layer matmuls autotune: each benchmark run is counted (a stand-in replaces the timing,
  which needs a GPU), for a mini-batch run of two batch sizes (even batches, a row apart).
"""
import importlib

import pytest
import torch

import manualnn
from launches import record_launches, specialization_key
from manualnn import kernels, seed_data
from manualnn.testing import judge
from manualnn.training import batch_order
from manualnn.training import epoch as epoch_module
from manualnn.training.graphs import ChunkGraph, RecordedChunk

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def keys(launched):
    return {specialization_key(kernel, args, kwargs) for kernel, args, kwargs in launched}


@pytest.mark.parametrize("slot", [4, 3], ids=["16-byte-slots", "12-byte-slots"])
@pytest.mark.parametrize("batch_size", [None, 36], ids=["full-batch", "minibatch"])   # 33, 33, 32, 32 rows
@pytest.mark.parametrize("path", ["two-launch", "per-layer"])
def test_a_captured_chunk_needs_no_compile_the_warm_up_did_not(path, batch_size, slot, monkeypatch):
    # 12-byte slots are what issue 16 found: the loss pointers must not be specialised on alignment
    monkeypatch.setattr(epoch_module, "SLOT", slot)
    if path == "per-layer":
        monkeypatch.setattr(kernels, "fits", lambda widths: False)
    # 130 rows: more than one output program under the interpreter, so the loss goes through sum_partials
    x, y, w0 = seed_data(70, batch=130, features=11, hidden=(9,), out=3, device=DEVICE, init="kaiming")
    trainer = manualnn.Trainer(x, y.argmax(1), w0, backend="triton", batch_size=batch_size, bias=True, loss="ce",
                               optimizer="adam", lr=1e-3)
    runner = trainer.runner
    with record_launches() as warm:           # the eager epoch the Trainer runs before any capture
        runner.run(runner.order(0), runner.new_rows(1)[0])
    chunk = ChunkGraph(runner, 3, runner.host_order, capture=RecordedChunk)
    with record_launches() as captured:
        chunk.run(1)
    assert captured and len(captured) == 3 * len(warm)
    scalars = [a for _, args, _ in captured for a in args if isinstance(a, torch.Tensor) and a.dim() == 0]
    assert any(t.data_ptr() % 16 for t in scalars) == (slot == 3)     # some loss slots 12 bytes apart
    new = keys(captured) - keys(warm)
    assert not new, f"the captured chunk would compile {sorted(n for n, _ in new)} during the capture"


def test_the_key_sees_alignment():
    # the check above can fail: a pointer argument 4 bytes off 16 is another key (another compile)
    x, y, w0 = seed_data(71, batch=8, features=5, hidden=(), out=3, device=DEVICE)
    buffer = torch.zeros(8 * 3 + 1, device=DEVICE)
    shifted = buffer[1:].view(8, 3)
    with record_launches() as launched:
        for g in (torch.empty(8, 3, device=DEVICE), shifted):
            kernels.output_loss(x, w0[0], y, g, torch.zeros((), device=DEVICE))
    assert len(keys(launched)) == 2


def test_autotuning_benchmarks_each_config_once_per_bucketed_key(monkeypatch):
    # a network too wide for the two-launch step, 100 rows in batches of at most 40: 34, 33, 33 rows
    # (two batch sizes, one bucket of at most 64 rows: one tuning per kernel and layer)
    from triton.runtime import autotuner
    import manualnn.kernels._common as common
    monkeypatch.setattr(common, "AUTOTUNE", True)
    tuners = [getattr(importlib.import_module(f"manualnn.kernels.{name}"), f"{name}_autotuned")
              for name in ("linear_relu", "input_grad", "weight_grad")]
    for tuner in tuners:     # forget earlier tunings, in memory and (on a GPU) on disk
        monkeypatch.setattr(tuner, "cache", {})
        monkeypatch.setattr(tuner, "cache_results", False)
    benched = []

    def bench(self, *args, config, **meta):      # the timing needs a GPU: every config takes 1 ms
        benched.append((self.base_fn.__name__, meta.get("PRECISION"), config.kwargs["BLOCK_K"]))
        return [1.0, 1.0, 1.0]

    monkeypatch.setattr(autotuner.Autotuner, "_bench", bench)
    x, y, w0 = seed_data(72, batch=100, features=7, hidden=(130,), out=3, device=DEVICE)
    trainer = manualnn.Trainer(x, y, w0, backend="triton", batch_size=40, lr=1e-5)
    assert [s.two_launch for s in trainer.steps] == [False, False]
    trainer.run(2)
    per_kernel = {name: sum(n == name for n, _, _ in benched) for name, _, _ in benched}
    configs = len(common.TILES["matmul"])
    # each kernel and layer tuned once over its precision's configs (ieee: BLOCK_K 16), whatever the batch size
    assert per_kernel == {"linear_relu_kernel": configs, "input_grad_kernel": configs,
                          "weight_grad_kernel": 2 * len(common.TILES["update"])}, per_kernel
    assert {k for _, _, k in benched} == {common.block_k("ieee")}
    result = trainer.run(1)
    assert len(benched) == 2 * configs + 2 * len(common.TILES["update"])   # tuned once: nothing more
    verdict = judge(trainer.losses, result.weights, x, y, w0, epochs=3, lr=1e-5, grad="relu", batch_size=40,
                    order=lambda e: batch_order(100, e))
    assert verdict.ok, verdict.summary()
