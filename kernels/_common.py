"""Pieces every kernel shares: the masked matmul tile, program-id grouping, block choice, checks.

Every tl.dot names its input precision: "ieee" fp32 (the default, equal to the reference),
"tf32", or "bf16" (operands rounded to bf16 in registers, fp32 accumulation, fp32 master data).
"""
import os

import torch
import triton
import triton.language as tl

# Read once, as triton.jit does when it decorates: the kernels below are interpreted iff this is set.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# On the GPU, launchers autotune over gpu_configs(); MANUALNN_AUTOTUNE=0 uses fixed_config() instead
# (test runs: fewer compiles). The interpreter always uses one fixed config.
AUTOTUNE = not INTERPRET and os.environ.get("MANUALNN_AUTOTUNE", "1") != "0"
PRECISIONS = ("ieee", "tf32", "bf16")


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
def grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's tile: row and column offsets, tiles ordered GROUP_M rows at a time for L2 reuse."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)


@triton.jit
def matmul_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, offs_m, offs_n,
                am_ptr, stride_amm, stride_amk, bm_ptr, stride_bmk, stride_bmn,
                A_MASK: tl.constexpr, B_MASK: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 tile of A[M, K] @ B[K, N] at rows offs_m, columns offs_n; any strides (transposes too).

    Out-of-range elements load as 0, so they add nothing. With A_MASK (B_MASK) an operand element
    counts only where the same element of am (bm) is > 0: the ReLU mask applied while loading.
    """
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        in_a = (offs_m[:, None] < M) & (kk[None, :] < K)
        in_b = (kk[:, None] < K) & (offs_n[None, :] < N)
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak, mask=in_a, other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + offs_n[None, :] * stride_bn, mask=in_b, other=0.0)
        if A_MASK:
            am = tl.load(am_ptr + offs_m[:, None] * stride_amm + kk[None, :] * stride_amk, mask=in_a, other=0.0)
            a = tl.where(am > 0, a, 0.0)
        if B_MASK:
            bm = tl.load(bm_ptr + kk[:, None] * stride_bmk + offs_n[None, :] * stride_bmn, mask=in_b, other=0.0)
            b = tl.where(bm > 0, b, 0.0)
        acc = mma(a, b, acc, PRECISION)
    return acc


def pow2_block(n, lo=16, hi=128):
    """The power of two covering n, within [lo, hi] (tl.dot needs at least 16)."""
    return max(lo, min(hi, triton.next_power_of_2(int(n))))


def fixed_config(M, N, K):
    """One config: under the interpreter large blocks (few programs, numpy does the rest); on the GPU
    a middle-sized tile that fits any shape."""
    if INTERPRET:
        return dict(BLOCK_M=pow2_block(M), BLOCK_N=pow2_block(N), BLOCK_K=pow2_block(K), GROUP_M=8)
    return dict(BLOCK_M=64, BLOCK_N=pow2_block(N, hi=64), BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=3)


def gpu_configs():
    """A short list to autotune over on the GPU."""
    shapes = [(32, 32, 32, 4, 2), (64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3),
              (128, 128, 32, 8, 3)]
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8), num_warps=w, num_stages=s)
            for m, n, k, w, s in shapes]


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")


def check_operand(name, t, shape, device):
    """A 2-D float32 tensor of the given shape on the given device (any strides)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: expected dtype torch.float32, got {t.dtype}")
    if t.dim() != 2 or (shape is not None and tuple(t.shape) != tuple(shape)):
        want = "a 2-D tensor" if shape is None else f"shape {tuple(shape)}"
        raise ValueError(f"{name}: expected {want}, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if t.device.type == "cpu" and not INTERPRET:
        raise ValueError(f"{name}: the Triton kernels take CUDA tensors (CPU tensors only under TRITON_INTERPRET=1, "
                         f"set before manualnn.kernels is imported)")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: expected a CUDA tensor, got device {t.device}")
    return t


def check_output(name, t, shape, device):
    """Like check_operand, and writable: no stride 0 (an expanded view would be written racily)."""
    check_operand(name, t, shape, device)
    if any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape)):
        raise ValueError(f"{name}: expected a writable tensor without broadcast (stride 0) dimensions, "
                         f"got strides {t.stride()}")
    return t


def launch(autotuned, kernel, grid_fn, M, N, K, config, args, **constexprs):
    """Run ``kernel`` with an explicit config (tests, the interpreter) or its autotuned wrapper."""
    if config is None and autotuned is not None:
        autotuned[grid_fn](*args, **constexprs)
        return
    config = dict(config or fixed_config(M, N, K))
    num_warps = config.pop("num_warps", 4)
    num_stages = config.pop("num_stages", 2)
    kernel[grid_fn](*args, **constexprs, **config, num_warps=num_warps, num_stages=num_stages)
