"""A whole training step of a narrow network in two launches.

For a network x -> p_0 -> ReLU -> ... -> p_{L-1} -> z whose every layer output (hidden widths and
the output width) fits one tile of WIDTH <= MAX_WIDTH columns:

1. ``mlp_rows_kernel``, one program per block of BLOCK_M rows (layer 0 split over K between a few
   programs per block when the batch gives few blocks): the forward through every layer,
   storing each hidden activation h_l; the output error and the exact output gradient
   g = scale * e ("sse" or "ce", as output_loss.py) and this block's loss partial; then the
   backward to every hidden gradient, grad_h_l = mask(g_{l+1} @ w_l^T), masked by h_l ("relu") or
   by its own sign ("tutorial"). It only reads the weights.
2. ``mlp_update_kernel``, one program per BLOCK_R x BLOCK_C tile of any layer's parameter: the
   gradient [a_l, 1]^T @ g_l over the whole batch, handed to optim.apply_optimizer (the update, or
   the gradient-only store); program 0 also sums the loss partials in a fixed order (no float
   atomics: deterministic).

Launch 2 starts after launch 1 has finished, so every weight is read before any is updated (the
seed's order). Every matmul runs over K in BLOCK_K slices, its left operand read back from memory
(x, the stored activations, the stored gradients), the way tiny-cuda-nn keeps activations in
shared memory rather than registers: a 128-wide weight held whole in registers (128 fp32 registers
per thread at 4 warps) spills. The same program stored those rows just before (a barrier between),
so the reads hit L1/L2. A bias is the last row of a layer's parameter; a hidden layer's column of
ones is never stored: it is made in registers where a slice of [h, 1] is loaded. Layers are
described to the kernels by an int64 table (addresses, strides, widths) built once, so one
compiled kernel serves any depth.
"""
import torch
import triton
import triton.language as tl

from ._common import GRAD_MODES, INTERPRET, MAXNREG, check_matrix, check_precision, check_scalar_out, check_shape, \
    check_writable, mma, pow2_block, prepare_launch, relu, relu_backward
from .optim import advance_adam, apply_optimizer, optimizer_args
from .output_loss import LOSSES, output_error, unused_adam

MAX_WIDTH = 128          # widest layer output that fits the one-tile kernels

# columns of the layer table: one row per layer l, describing its input a_l (x, or the stored h_l:
# IN_COLS columns in memory; the parameter's K_ROWS = IN_COLS + 1 when a ones column is made for the
# bias), its contiguous parameter p_l [K_ROWS, N_OUT], the gradient of its output g_l (contiguous
# [B, N_OUT]), and its update's buffers
IN_ADDR = tl.constexpr(0)
IN_SROW = tl.constexpr(1)
IN_SCOL = tl.constexpr(2)
IN_COLS = tl.constexpr(3)
P_ADDR = tl.constexpr(4)
K_ROWS = tl.constexpr(5)
N_OUT = tl.constexpr(6)
G_ADDR = tl.constexpr(7)
GRAD_ADDR = tl.constexpr(8)
M_ADDR = tl.constexpr(9)
V_ADDR = tl.constexpr(10)
DECAY_ROWS = tl.constexpr(11)
FIELDS = tl.constexpr(12)


@triton.jit
def layer_field(table_ptr, layer, FIELD: tl.constexpr):
    return tl.load(table_ptr + layer * FIELDS + FIELD)


@triton.jit
def layer_ptr(table_ptr, layer, FIELD: tl.constexpr):
    return layer_field(table_ptr, layer, FIELD).to(tl.pointer_type(tl.float32))


@triton.jit
def forward_layer(table_ptr, layer, rows, rows_in, cols, k_lo, k_hi, PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WIDTH: tl.constexpr):
    """z = [a_l, 1] @ p_l for this block's rows (fp32), over K from k_lo to k_hi in BLOCK_K slices."""
    a_ptr = layer_ptr(table_ptr, layer, IN_ADDR)
    a_rows = rows[:, None] * layer_field(table_ptr, layer, IN_SROW)
    stride_ak = layer_field(table_ptr, layer, IN_SCOL)
    a_cols = layer_field(table_ptr, layer, IN_COLS)
    n_out = layer_field(table_ptr, layer, N_OUT)
    p_ptr = layer_ptr(table_ptr, layer, P_ADDR)
    cols_in = cols[None, :] < n_out
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    z = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(a_ptr + a_rows + kk[None, :] * stride_ak, mask=rows_in[:, None] & (kk[None, :] < a_cols),
                    other=0.0)
        a = tl.where(kk[None, :] == a_cols, 1.0, a)   # the bias's column of ones (meets a zero row without one)
        w = tl.load(p_ptr + kk[:, None] * n_out + cols[None, :], mask=(kk[:, None] < k_hi) & cols_in, other=0.0)
        z = mma(a, w, z, PRECISION)
    return z


@triton.jit
def backward_layer(table_ptr, layer, rows, rows_in, cols, MODE: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WIDTH: tl.constexpr):
    """grad_h_l = mask(g_l @ w_l^T) (w_l: p_l without its bias row) into g_{l-1}, for this block's rows."""
    g_ptr = layer_ptr(table_ptr, layer, G_ADDR)
    n_out = layer_field(table_ptr, layer, N_OUT)
    h_width = layer_field(table_ptr, layer, IN_COLS)
    p_ptr = layer_ptr(table_ptr, layer, P_ADDR)
    in_h = rows_in[:, None] & (cols[None, :] < h_width)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    acc = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
    for k0 in range(0, n_out, BLOCK_K):
        kk = k0 + offs_k
        g = tl.load(g_ptr + rows[:, None] * n_out + kk[None, :], mask=rows_in[:, None] & (kk[None, :] < n_out),
                    other=0.0)
        w_t = tl.load(p_ptr + cols[None, :] * n_out + kk[:, None],     # w_l^T[k, c] = p_l[c, k]
                      mask=(kk[:, None] < n_out) & (cols[None, :] < h_width), other=0.0)
        acc = mma(g, w_t, acc, PRECISION)
    h = acc   # unread by "tutorial"
    if MODE == "relu":
        h = tl.load(layer_ptr(table_ptr, layer, IN_ADDR) + rows[:, None] * layer_field(table_ptr, layer, IN_SROW)
                    + cols[None, :] * layer_field(table_ptr, layer, IN_SCOL), mask=in_h, other=0.0)
    acc = relu_backward(acc, h, MODE)
    below = layer - 1
    tl.store(layer_ptr(table_ptr, below, G_ADDR) + rows[:, None] * layer_field(table_ptr, below, N_OUT)
             + cols[None, :], acc, mask=in_h)


@triton.jit(do_not_specialize=["n_split", "advance"])
def mlp_rows_kernel(table_ptr, y_ptr, partial_ptr, zsplit_ptr, count_ptr, step_ptr, powers_ptr, hyper_ptr, scale,
                    B, L, n_split, advance, stride_ym, stride_yn,
                    MODE: tl.constexpr, LOSS: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WIDTH: tl.constexpr):
    pid = tl.program_id(0)
    if advance != 0:     # Adam's step and beta^t, before the update kernel reads them
        if pid == 0:
            advance_adam(step_ptr, powers_ptr, hyper_ptr)
    block = pid // n_split
    split = pid % n_split
    rows = block.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_in = rows < B
    cols = tl.arange(0, WIDTH).to(tl.int64)     # the columns of any layer's output

    # layer 0 (the input's features: most of the work), split over K between n_split programs per
    # row block, so a small batch still keeps dozens of SMs busy. Each stores its part; the last of
    # them to arrive (an atomic count per block) sums the parts in a fixed order (deterministic) and
    # goes on alone, resetting the count for the next step (and a CUDA graph's next replay).
    k_rows = layer_field(table_ptr, 0, K_ROWS)
    k_per = tl.cdiv(tl.cdiv(k_rows, BLOCK_K), n_split) * BLOCK_K
    k_lo = split * k_per
    z = forward_layer(table_ptr, 0, rows, rows_in, cols, k_lo, tl.minimum(k_lo + k_per, k_rows), PRECISION, BLOCK_M,
                      BLOCK_K, WIDTH)
    last = n_split == 1
    if n_split > 1:
        parts = zsplit_ptr + rows[:, None] * WIDTH + cols[None, :]      # [n_split, B, WIDTH]
        plane = B.to(tl.int64) * WIDTH      # one part's elements: past 2**31 at a million rows
        tl.store(parts + split * plane, z, mask=rows_in[:, None])
        tl.debug_barrier()      # every thread's part is written before the count says so
        last = tl.atomic_add(count_ptr + block, 1, sem="acq_rel", scope="gpu") == n_split - 1
        if last:
            z = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
            for s in range(0, n_split):     # .cg: from L2, where the other programs' parts are
                z += tl.load(parts + s * plane, mask=rows_in[:, None], other=0.0, cache_modifier=".cg")
            tl.store(count_ptr + block, 0)
    if last:
        # hidden layers: h_{l+1} = relu([a_l, 1] @ p_l), stored: the next layer, the relu mask and the
        # update read it back (a barrier first: other threads of this program stored parts of it)
        for layer in range(0, L - 1):
            if layer > 0:
                z = forward_layer(table_ptr, layer, rows, rows_in, cols, 0, layer_field(table_ptr, layer, K_ROWS),
                                  PRECISION, BLOCK_M, BLOCK_K, WIDTH)
            above = layer + 1
            tl.store(layer_ptr(table_ptr, above, IN_ADDR) + rows[:, None] * layer_field(table_ptr, above, IN_SROW)
                     + cols[None, :] * layer_field(table_ptr, above, IN_SCOL), relu(z),
                     mask=rows_in[:, None] & (cols[None, :] < layer_field(table_ptr, layer, N_OUT)))
            tl.debug_barrier()

        # output: the error, the exact gradient scale * e and this block's loss partial
        last_layer = L - 1
        if last_layer > 0:
            z = forward_layer(table_ptr, last_layer, rows, rows_in, cols, 0,
                              layer_field(table_ptr, last_layer, K_ROWS), PRECISION, BLOCK_M, BLOCK_K, WIDTH)
        n_out = layer_field(table_ptr, last_layer, N_OUT)
        inside = rows_in[:, None] & (cols[None, :] < n_out)
        y = tl.load(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn, mask=inside, other=0.0)
        e, loss = output_error(z, y, inside, cols[None, :] < n_out, LOSS)
        tl.store(layer_ptr(table_ptr, last_layer, G_ADDR) + rows[:, None] * n_out + cols[None, :], scale * e,
                 mask=inside)
        tl.store(partial_ptr + block, tl.sum(tl.sum(loss, axis=1), axis=0))
        tl.debug_barrier()

        # backward, last layer first
        for i in range(0, L - 1):
            backward_layer(table_ptr, L - 1 - i, rows, rows_in, cols, MODE, PRECISION, BLOCK_M, BLOCK_K, WIDTH)
            tl.debug_barrier()


@triton.jit(do_not_specialize_on_alignment=["loss_ptr"])
def mlp_update_kernel(table_ptr, tile_ptr, partial_ptr, n_partials, loss_ptr, hyper_ptr, powers_ptr, B,
                      OPTIMIZER: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr,
                      PARTIALS_BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    layer = tl.load(tile_ptr + 3 * pid)
    r = tl.load(tile_ptr + 3 * pid + 1) + tl.arange(0, BLOCK_R).to(tl.int64)    # this tile's rows of p_l
    c = tl.load(tile_ptr + 3 * pid + 2) + tl.arange(0, BLOCK_C).to(tl.int64)    # and its columns
    a_cols = layer_field(table_ptr, layer, IN_COLS)
    n_out = layer_field(table_ptr, layer, N_OUT)
    inside = (r[:, None] < layer_field(table_ptr, layer, K_ROWS)) & (c[None, :] < n_out)
    a_ptr = layer_ptr(table_ptr, layer, IN_ADDR)
    a_rows = r[:, None] * layer_field(table_ptr, layer, IN_SCOL)     # [a_l, 1]^T: its rows are a_l's columns
    stride_ab = layer_field(table_ptr, layer, IN_SROW)
    g_ptr = layer_ptr(table_ptr, layer, G_ADDR)
    offs_b = tl.arange(0, BLOCK_B).to(tl.int64)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):     # the gradient sums over the whole batch
        bb = b0 + offs_b
        a_t = tl.load(a_ptr + a_rows + bb[None, :] * stride_ab, mask=(r[:, None] < a_cols) & (bb[None, :] < B),
                      other=0.0)
        a_t = tl.where(r[:, None] == a_cols, 1.0, a_t)     # the ones row: the bias gradient sums g
        g = tl.load(g_ptr + bb[:, None] * n_out + c[None, :], mask=(bb[:, None] < B) & (c[None, :] < n_out),
                    other=0.0)
        acc = mma(a_t, g, acc, PRECISION)
    apply_optimizer(acc, r[:, None] * n_out + c[None, :], inside,
                    r[:, None] < layer_field(table_ptr, layer, DECAY_ROWS),
                    layer_ptr(table_ptr, layer, P_ADDR), layer_ptr(table_ptr, layer, GRAD_ADDR),
                    layer_ptr(table_ptr, layer, M_ADDR), layer_ptr(table_ptr, layer, V_ADDR), hyper_ptr, powers_ptr,
                    OPTIMIZER=OPTIMIZER)

    if pid == 0:    # the loss: the row blocks' partials in a fixed order
        total = tl.zeros((PARTIALS_BLOCK,), dtype=tl.float32)
        for start in range(0, n_partials, PARTIALS_BLOCK):
            offs = start + tl.arange(0, PARTIALS_BLOCK)
            total += tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
        tl.store(loss_ptr, tl.sum(total, axis=0))


def fits(widths):
    """Whether a network whose layer outputs are ``widths`` wide can take the two-launch step."""
    return all(n <= MAX_WIDTH for n in widths)


# Programs the rows kernel aims for, splitting layer 0's K when the batch alone gives fewer; and the
# least K a split keeps (its part costs a store and a load of the block's [BLOCK_M, WIDTH] tile).
# Why (an estimate, not yet measured): at the seed's shape in "ieee", 100 rows are 7 blocks of 16; a
# block's layer 0 is 16 x 1001 x 128 FMAs = 4.1 MFLOP, 8 us at an H200 SM's fp32 peak (~0.5 TFLOP/s)
# and more like 12-16 us from an FMA dot, on 7 of 132 SMs: most of the step. Split 7 ways (49
# programs) a part is 0.6 MFLOP, ~1-2 us, plus ~0.5 us for the last one to sum 7 parts from L2.
# Memory is not the bound: p_0 (400 KB) read once per block is 2.8 MB of L2 traffic.
TARGET_PROGRAMS = 64
MIN_SPLIT_K = 128
PARTIALS_BLOCK = 128     # the update kernel's block for the loss partials: one value, one compiled variant


def default_config(batch, features, precision):
    """Blocks for both kernels, chosen so that no variant spills registers on sm_90 (tests/compile_sm90.py
    reads ptxas). Under the interpreter: large blocks (few programs). On the GPU: "ieee" (fp32 FMA)
    takes 16-row blocks and thin K slices (16, as _common.block_k) over 8 warps; tf32 and bf16 take
    64-row tiles, the smallest that Hopper's warpgroup MMA (wgmma) works on, with 8 warps. The
    update's tiles are 32 columns wide (more programs; the optimizer epilogue at most 16 elements a
    thread). The row kernels name maxnreg (see _common.MAXNREG). SPLIT: how many programs share
    layer 0's K (split_k() picks)."""
    if INTERPRET:
        return dict(rows=dict(BLOCK_M=pow2_block(batch), BLOCK_K=pow2_block(features), SPLIT=1),
                    update=dict(BLOCK_R=pow2_block(features), BLOCK_C=128, BLOCK_B=pow2_block(batch)))
    if precision == "ieee":
        return dict(rows=dict(BLOCK_M=16, BLOCK_K=16, num_warps=8, num_stages=2, maxnreg=MAXNREG),
                    update=dict(BLOCK_R=32, BLOCK_C=32, BLOCK_B=16, num_warps=4, num_stages=3))
    return dict(rows=dict(BLOCK_M=64, BLOCK_K=16, num_warps=8, num_stages=3, maxnreg=MAXNREG),
                update=dict(BLOCK_R=64, BLOCK_C=32, BLOCK_B=32, num_warps=4, num_stages=3))


def split_k(blocks, k_rows, block_k):
    """Programs per row block for layer 0: enough for about TARGET_PROGRAMS in all, each with at
    least MIN_SPLIT_K of K (and whole BLOCK_K slices)."""
    most = max(1, k_rows // max(MIN_SPLIT_K, block_k))
    return max(1, min(triton.cdiv(TARGET_PROGRAMS, max(blocks, 1)), most))


class TwoLaunchStep:
    """One training step of a narrow ReLU network on fixed tensors, as two kernel launches.

    Args:
        x: [B, D] float32 input; with ``bias``, its last column is ones (D counts it).
        y: [B, O] float32 target.
        params: [p_0 [D, n_1], p_1 [n_1 (+1), n_2], ..., p_{L-1} [n_{L-1} (+1), O]], contiguous float32,
            updated in place; with ``bias`` every layer after the first has one row more than its
            input's width (the bias row, on a column of ones made in registers). Every n_l and O at
            most MAX_WIDTH (see fits()).
        grad: the gradient mode, "relu" (grad_h masked where h <= 0) or "tutorial" (grad_h clamped at 0, the seed's).
        loss: "sse" or "ce"; scale: the output gradient's constant (manualnn.spec's grad_scale).
        optimizer, hyper, state (per layer), powers, decay_rows (per layer): see optim.optimizer_args;
            ``step``: Adam's 0-d int64 step count (advanced with powers by the rows kernel's program 0).
        grads: tensors shaped like params for ``gradients()`` (None: that method is unavailable).
        precision: "ieee", "tf32" or "bf16".
        config: dict(rows=dict(BLOCK_M, BLOCK_K[, SPLIT, num_warps, num_stages]), update=dict(BLOCK_R,
            BLOCK_C, BLOCK_B[, ...])); default default_config(). Tests pass small blocks to force ragged
            tiles, and SPLIT to split layer 0's K.

    Owns its buffers: ``acts`` (h_1..h_{L-1}), ``outs`` (the gradients of every layer's output, the
    last one scale * e) and ``partials`` (one loss partial per row block).
    """

    def __init__(self, x, y, params, *, bias=False, grad="relu", loss="sse", scale=2.0, optimizer="sgd", hyper=None,
                 state=None, powers=None, step=None, decay_rows=None, grads=None, precision="ieee", config=None):
        check_precision(precision)
        if grad not in GRAD_MODES:
            raise ValueError(f"grad: expected one of {', '.join(map(repr, GRAD_MODES))}, got {grad!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
        check_matrix("x", x)
        device = x.device
        if isinstance(params, torch.Tensor) or not isinstance(params, (list, tuple)) or not params:
            raise TypeError(f"params: expected a non-empty list of tensors, got {type(params).__name__}")
        (B, D), width = x.shape, x.shape[1]
        for i, p in enumerate(params):
            check_matrix(f"params[{i}]", p, device)
            check_shape(f"params[{i}]", p, (width + (1 if bias and i else 0), p.shape[1]))
            if p.shape[1] > MAX_WIDTH:
                raise ValueError(f"params[{i}]: the two-launch step takes layers at most {MAX_WIDTH} wide, "
                                 f"got shape {tuple(p.shape)} (use the per-layer kernels)")
            width = p.shape[1]
        check_matrix("y", y, device)
        check_shape("y", y, (B, width))
        L = len(params)
        state = state or [()] * L
        decay_rows = decay_rows or [0] * L
        reads = [("x", x), ("y", y)]
        updates = []
        for i, p in enumerate(params):
            others = [(f"params[{j}]", q) for j, q in enumerate(params) if j != i]
            updates.append(optimizer_args(optimizer, p, hyper=hyper, state=state[i], powers=powers,
                                          decay_rows=decay_rows[i], reads=reads + others))
            if grads is not None:
                optimizer_args("grad", p, grad_out=grads[i], reads=reads + [("params", q) for q in params])
        if optimizer == "adam" and not (isinstance(step, torch.Tensor) and step.dtype == torch.int64):
            raise ValueError(f"step: Adam counts its steps in a 0-d int64 tensor, got {step!r}")
        self.x, self.y, self.params, self.grads = x, y, list(params), grads
        self.width = pow2_block(max(p.shape[1] for p in params))
        config = config or default_config(B, D, precision)
        self.rows_config, self.update_config = dict(config["rows"]), dict(config["update"])
        n = triton.cdiv(B, self.rows_config["BLOCK_M"])
        self.split = self.rows_config.pop("SPLIT", None) or split_k(n, D, self.rows_config["BLOCK_K"])

        new = lambda cols: torch.empty(B, cols, dtype=torch.float32, device=device)  # noqa: E731
        self.acts = [new(p.shape[1]) for p in params[:-1]]       # h_l, without a ones column
        self.outs = [new(p.shape[1]) for p in params]            # dL/dz_l
        inputs = [x] + self.acts
        table = [[a.data_ptr(), a.stride(0), a.stride(1), a.shape[1], p.data_ptr(), p.shape[0], p.shape[1],
                  g.data_ptr(), (grads[i] if grads is not None else p).data_ptr(), u["m_ptr"].data_ptr(),
                  u["v_ptr"].data_ptr(), u["decay_rows"]]
                 for i, (a, p, g, u) in enumerate(zip(inputs, params, self.outs, updates))]
        self.table = torch.tensor(table, dtype=torch.int64, device=device)
        block_r, block_c = self.update_config["BLOCK_R"], self.update_config["BLOCK_C"]
        tiles = [(layer, r0, c0) for layer, p in enumerate(params) for r0 in range(0, p.shape[0], block_r)
                 for c0 in range(0, p.shape[1], block_c)]
        self.tiles = torch.tensor(tiles, dtype=torch.int64, device=device)
        self.partials = torch.empty(max(n, 1), dtype=torch.float32, device=device)
        # layer 0's parts when split, and each row block's count of parts done (zero between steps)
        self.zsplit = torch.empty(self.split if self.split > 1 else 0, B, self.width, dtype=torch.float32,
                                  device=device)
        self.counts = torch.zeros(max(n, 1), dtype=torch.int32, device=device)
        adam = optimizer == "adam"
        hyper_ = updates[0]["hyper_ptr"]
        powers_ = updates[0]["powers_ptr"]
        unused = unused_adam(device)

        def rows(advance):
            return prepare_launch(
                mlp_rows_kernel, None, (n * self.split,), self.rows_config, None,
                table_ptr=self.table, y_ptr=y, partial_ptr=self.partials, zsplit_ptr=self.zsplit,
                count_ptr=self.counts, step_ptr=step if adam else unused[0],
                powers_ptr=powers if adam else unused[1], hyper_ptr=hyper_ if adam else unused[2],
                scale=float(scale), B=B, L=L, n_split=self.split, advance=int(advance),
                stride_ym=y.stride(0), stride_yn=y.stride(1), MODE=grad, LOSS=loss, PRECISION=precision,
                WIDTH=self.width)

        def update(opt):   # each step passes its own loss slot as loss_ptr
            return prepare_launch(
                mlp_update_kernel, None, (self.tiles.shape[0],), self.update_config, None,
                table_ptr=self.table, tile_ptr=self.tiles, partial_ptr=self.partials, n_partials=n,
                loss_ptr=self.partials, hyper_ptr=hyper_, powers_ptr=powers_, B=B, OPTIMIZER=opt,
                PRECISION=precision, PARTIALS_BLOCK=PARTIALS_BLOCK)
        self.launch_rows, self.launch_update = rows(adam), update(optimizer)
        if grads is not None:
            self.launch_rows_only, self.launch_gradients = (rows(False) if adam else self.launch_rows), update("grad")

    def step(self, loss_out):
        """Two launches: rows (forward, loss partials, backward), then every parameter's update and the loss."""
        check_scalar_out("loss_out", loss_out, self.x.device)
        self.launch_rows()
        self.launch_update(loss_ptr=loss_out)

    def gradients(self, loss_out):
        """The same two launches, the second storing every layer's gradient into ``grads`` (no update)."""
        check_scalar_out("loss_out", loss_out, self.x.device)
        if self.grads is None:
            raise ValueError("grads: gradients() stores into the grads given when the step was made; got None")
        self.launch_rows_only()
        self.launch_gradients(loss_ptr=loss_out)
