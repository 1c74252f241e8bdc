"""Pieces every kernel shares: the matmul tile, program-id grouping, block choice, checks, launch.

Every tl.dot names its input precision: "ieee" fp32 (the default, equal to the reference),
"tf32", or "bf16" (operands rounded to bf16 in registers, fp32 accumulation, fp32 master data).
Element offsets are int64 (row and column offsets are widened before they meet a stride), so
tensors of 2**31 elements or more are addressed correctly.
"""
import functools
import inspect
import os

import torch
import triton
import triton.language as tl

GRAD_MODES = ("relu", "tutorial")   # the ReLU backward: the correct mask, or the seed's clamp (see relu_backward)
# Read once, as triton.jit does when it decorates: the kernels below are interpreted iff this is set.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# On the GPU, launchers autotune over gpu_configs() by default; MANUALNN_AUTOTUNE=0 makes one fixed
# config the default instead (test runs: fewer compiles). config="autotune" always autotunes (on the
# GPU). The interpreter uses one fixed config (a test turns AUTOTUNE on there, with a stand-in for
# the benchmark, to count the tuner's runs).
AUTOTUNE = not INTERPRET and os.environ.get("MANUALNN_AUTOTUNE", "1") != "0"
PRECISIONS = ("ieee", "tf32", "bf16")


def device_problem(device):
    """Why these kernels cannot run on ``device`` in this process, or None if they can.

    The one answer to "can Triton run here" once Triton is importable: CUDA always; CPU tensors
    only when TRITON_INTERPRET=1 was set before this module was first imported.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if INTERPRET:
            return None
        return ("the Triton kernels take CUDA tensors (CPU tensors only under TRITON_INTERPRET=1, set before "
                "manualnn.kernels is first imported)")
    return f"the Triton kernels take CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device.type}"


@triton.jit
def mma(a, b, acc, PRECISION: tl.constexpr):
    """acc += a @ b in the named precision."""
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc, input_precision="ieee")
    elif PRECISION == "tf32":
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def relu(x):
    """clamp(x, min=0) keeping NaN (NaN < 0 is false), as torch's relu_ and clamp do; tl.maximum would turn a
    NaN into 0 and train on with finite losses where the other backends stop."""
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def relu_backward(grad, h, MODE: tl.constexpr):
    """The ReLU backward of grad, as torch's: "relu" zeroes it where the activation h <= 0 (a NaN h lets it
    through, as threshold_backward does); "tutorial" is the seed's clamp of grad's own values."""
    if MODE == "relu":
        return tl.where(h <= 0.0, 0.0, grad)
    return relu(grad)


@triton.jit
def grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's tile as int64 row and column offsets; tiles ordered GROUP_M rows at a time (L2 reuse)."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n


@triton.jit
def matmul_tile(a_ptr, stride_am, stride_ak, b_ptr, stride_bk, stride_bn, M, N, K, offs_m, offs_n,
                PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 tile of A[M, K] @ B[K, N] at rows offs_m, columns offs_n (int64); any strides (transposes too).
    Out-of-range elements load as 0, so they add nothing."""
    rows_in = offs_m[:, None] < M          # the row and column masks do not change along K
    cols_in = offs_n[None, :] < N
    a_rows = offs_m[:, None] * stride_am
    b_cols = offs_n[None, :] * stride_bn
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(a_ptr + a_rows + kk[None, :] * stride_ak, mask=rows_in & (kk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + b_cols, mask=(kk[:, None] < K) & cols_in, other=0.0)
        acc = mma(a, b, acc, PRECISION)
    return acc


def pow2_block(n, lo=16, hi=128):
    """The power of two covering n, within [lo, hi] (tl.dot needs at least 16)."""
    return max(lo, min(hi, triton.next_power_of_2(int(n))))


# The tiles (BLOCK_M, BLOCK_N, num_warps) the per-layer matmuls autotune over on the GPU: two each,
# as every config costs a benchmark per key at start-up. Each compiles for sm_90 without a register
# spill (tests/compile_sm90.py reads ptxas): 128 x 128 spills once input_grad's ReLU mask is loaded,
# and an optimizer epilogue ("update": weight_grad) holds the gradient, p and Adam's m and v of its
# tile at once, so its tiles keep that to 16 elements a thread.
TILES = {"matmul": [(64, 64, 8), (128, 64, 8)], "update": [(32, 64, 4), (64, 64, 8)]}


# ptxas's register budget where a config names one: left alone, ptxas sometimes holds a kernel to 128
# registers (an occupancy guess) and spills a few bytes; but allowed 255 it also unrolls more, and
# some kernels then spill. So only the configs that need it name it (the fused step's row kernel);
# tests/compile_sm90.py decides, under the newest Triton and under 3.6.
MAXNREG = 255


def block_k(precision):
    """The K slice of a matmul: fp32 FMA ("ieee") keeps BLOCK_K values of each of a thread's rows and
    columns in registers (32 spills a 128-wide tile), so it takes the thinnest slice tl.dot allows in
    Triton 3.6 (16); tensor cores take 32."""
    return 16 if precision == "ieee" else 32


def gpu_configs(kind, precision):
    """The configs (dicts) of ``TILES[kind]`` for one precision."""
    return [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=block_k(precision), GROUP_M=8, num_warps=w, num_stages=3)
            for m, n, w in TILES[kind]]


def fixed_config(M, N, K, kind="matmul", precision="ieee"):
    """One config: under the interpreter large blocks (few programs, numpy does the rest); on the GPU
    the first of the autotuned list (MANUALNN_AUTOTUNE=0)."""
    if INTERPRET:
        return dict(BLOCK_M=pow2_block(M), BLOCK_N=pow2_block(N), BLOCK_K=pow2_block(K), GROUP_M=8)
    return gpu_configs(kind, precision)[0]


def batch_bucket(rows):
    """The autotuner's key for a batch dimension: the least of 64, 256, 1024, ... that holds it. A
    mini-batch run's batches, a row apart at most, share their tuning (and batch sizes that close
    choose the same tile anyway)."""
    bucket = 64
    while bucket < rows:
        bucket *= 4
    return bucket


def _for_precision(configs, named_args, **kwargs):
    return [c for c in configs if c.kwargs["BLOCK_K"] == block_k(kwargs["PRECISION"])]


def autotuned(kernel, kind, key, restore_value=None):
    """``kernel`` autotuned over ``TILES[kind]`` (the precision's BLOCK_K picked by pruning), keyed on
    ``key`` (a batch dimension through batch_bucket). Triton keeps the results on disk (cache_results),
    so a later process with the same kernels, shapes and GPU runs no benchmark at all."""
    configs = {(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["num_warps"]): c for p in PRECISIONS
               for c in gpu_configs(kind, p)}.values()
    configs = [triton.Config({k: c[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")},
                             num_warps=c["num_warps"], num_stages=c["num_stages"])
               for c in configs]
    return triton.autotune(configs, key=key, restore_value=restore_value, cache_results=True,
                           prune_configs_by={"early_config_prune": _for_precision})(kernel)


# ---- argument checks: types first, then shapes; every message names the argument ----

def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")


def check_matrix(name, t, device=None):
    """A 2-D float32 tensor on a device the kernels can use (``device``, when given)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: expected dtype torch.float32, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D tensor, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    problem = device_problem(t.device)
    if problem is not None:
        raise ValueError(f"{name}: {problem}")
    return t


def check_shape(name, t, shape):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got shape {tuple(t.shape)}")
    return t


def check_scalar_out(name, t, device):
    """A 0-d float32 tensor on ``device``: where a loss is written."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a 0-d torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: expected dtype torch.float32, got {t.dtype}")
    if t.dim() != 0:
        raise ValueError(f"{name}: expected a 0-d tensor, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    return t


def byte_span(t):
    """[first, last] byte address a tensor can touch (negative strides do not occur here)."""
    start = t.data_ptr()
    extent = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) + 1
    return start, start + extent * t.element_size() - 1


def check_writable(name, t, reads=()):
    """An output: no broadcast (stride 0) dimension, and no byte shared with an input it is written
    alongside (``reads``: (name, tensor) pairs), since other programs may still be reading it."""
    if any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape)):
        raise ValueError(f"{name}: expected a writable tensor without broadcast (stride 0) dimensions, "
                         f"got strides {t.stride()}")
    if t.numel() == 0:
        return t
    lo, hi = byte_span(t)
    for other_name, other in reads:
        if other is None or other.numel() == 0:
            continue
        olo, ohi = byte_span(other)
        if lo <= ohi and olo <= hi:
            raise ValueError(f"{name}: expected an output that does not overlap the input {other_name} "
                             f"(kernel programs would read what others write), got overlapping memory")
    return t


def prepare_launch(kernel, tuned, grid, config, shape, **args):
    """A callable that launches ``kernel`` on ``grid`` with keyword ``args``.

    Launchers check their arguments once, here; a caller that steps the same tensors again and
    again (a backend) keeps the callable, so a launch costs little more host time than Triton's own.
    Calling it with keywords replaces those runtime arguments for that launch only (a backend
    passes each step's loss slot this way: ``run(loss_ptr=loss_out)``).
    ``config``: None (autotuned on the GPU unless MANUALNN_AUTOTUNE=0, else fixed_config(*shape);
    ``shape`` = (M, N, K, kind, precision)),
    "autotune" (always the autotuned wrapper ``tuned``; on the GPU only), or a dict of blocks and
    optionally num_warps/num_stages. Runtime arguments go to Triton in the kernel's own order (the
    autotuner's restore_value finds them by position in older Triton versions); constexprs by keyword.
    """
    names = runtime_arg_names(kernel)
    try:
        runtime = tuple(args.pop(n) for n in names)
    except KeyError as e:
        raise TypeError(f"{kernel_name(kernel)}: missing argument {e.args[0]!r}") from None
    if config == "autotune" or (config is None and AUTOTUNE):
        if INTERPRET and not AUTOTUNE:
            raise ValueError("config: 'autotune' needs a GPU (the interpreter runs one fixed config)")
        fn, meta = tuned[grid], args
    else:
        config = dict(config or fixed_config(*shape))
        meta = dict(args, num_warps=config.pop("num_warps", 4), num_stages=config.pop("num_stages", 2), **config)
        fn = kernel[grid]

    def run(**changes):
        values = runtime
        if changes:
            values = list(runtime)
            for name, value in changes.items():
                values[names.index(name)] = value
        fn(*values, **meta)
    return run


def kernel_name(kernel):
    return getattr(kernel, "fn", kernel).__name__   # the Python function behind a JITFunction / InterpretedFunction


@functools.lru_cache(maxsize=None)
def runtime_arg_names(kernel):
    """The kernel's non-constexpr parameters, in order (computed once per kernel: launches are hot)."""
    params = inspect.signature(getattr(kernel, "fn", kernel)).parameters
    constexpr = lambda a: a is tl.constexpr or "constexpr" in str(a)  # noqa: E731
    return tuple(n for n in kernel.arg_names if not constexpr(params[n].annotation))
