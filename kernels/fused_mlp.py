"""A whole training step of a narrow network in two launches.

For a network x -> w_0 -> ReLU -> ... -> w_{L-1} -> y_pred whose every layer output (hidden widths
and the output width) fits one tile of WIDTH <= MAX_WIDTH columns:

1. ``mlp_rows_kernel``, one program per block of BLOCK_M rows: the forward through every layer
   (the first layer loops over the input features; later layers multiply the activation held in
   registers by the whole weight), storing each hidden activation h_l; the output's
   diff = y_pred - y, grad_y = 2*diff and this block's loss partial sum(diff^2); then the backward
   to every hidden gradient, grad_h_l = mask(grad_{l+1} @ w_l^T), masked by h_l ("relu") or by its
   own sign ("tutorial"). It only reads the weights.
2. ``mlp_update_kernel``, one program per tile of BLOCK_R weight rows of any layer:
   w_l -= lr * h_l^T @ grad_{l+1} (the SGD step in the epilogue, reduced over the whole batch);
   program 0 also sums the loss partials in a fixed order (no float atomics: deterministic).

Launch 2 starts after launch 1 has finished, so every weight is read before any is updated (the
seed's order). Layers are described to the kernels by an int64 table (addresses, strides, widths)
built once, so one compiled kernel serves any depth.
"""
import torch
import triton
import triton.language as tl

from ._common import INTERPRET, check_matrix, check_precision, check_scalar_out, check_shape, check_writable, \
    mma, pow2_block, prepare_launch

MAX_WIDTH = 128          # widest layer output that fits the one-tile kernels
MODES = ("relu", "tutorial")

# columns of the layer table: one row per layer l, describing its input a_l, weight w_l and the
# gradient of its output g_{l+1} (a contiguous buffer: column stride 1)
IN_ADDR = tl.constexpr(0)
IN_SROW = tl.constexpr(1)
IN_SCOL = tl.constexpr(2)
W_ADDR = tl.constexpr(3)
W_SROW = tl.constexpr(4)
W_SCOL = tl.constexpr(5)
G_ADDR = tl.constexpr(6)
G_SROW = tl.constexpr(7)
N_IN = tl.constexpr(8)
N_OUT = tl.constexpr(9)
FIELDS = tl.constexpr(10)


@triton.jit
def layer_field(table_ptr, layer, FIELD: tl.constexpr):
    return tl.load(table_ptr + layer * FIELDS + FIELD)


@triton.jit
def layer_ptr(table_ptr, layer, FIELD: tl.constexpr):
    return layer_field(table_ptr, layer, FIELD).to(tl.pointer_type(tl.float32))


@triton.jit
def mlp_rows_kernel(table_ptr, y_ptr, partial_ptr, B, L, stride_ym, stride_yn,
                    MODE: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WIDTH: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_in = rows < B
    cols = tl.arange(0, WIDTH).to(tl.int64)     # the columns of any layer's output
    wrows = tl.arange(0, WIDTH).to(tl.int64)    # the rows of a whole (one-tile) weight

    # layer 0: z = x[rows] @ w_0, looping over the input features
    x_ptr = layer_ptr(table_ptr, 0, IN_ADDR)
    x_rows = rows[:, None] * layer_field(table_ptr, 0, IN_SROW)
    stride_xk = layer_field(table_ptr, 0, IN_SCOL)
    w_ptr = layer_ptr(table_ptr, 0, W_ADDR)
    stride_wk = layer_field(table_ptr, 0, W_SROW)
    w_cols = cols[None, :] * layer_field(table_ptr, 0, W_SCOL)
    n_in = layer_field(table_ptr, 0, N_IN)
    cols_in = cols[None, :] < layer_field(table_ptr, 0, N_OUT)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    z = tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32)
    for k0 in range(0, n_in, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(x_ptr + x_rows + kk[None, :] * stride_xk, mask=rows_in[:, None] & (kk[None, :] < n_in),
                    other=0.0)
        w = tl.load(w_ptr + kk[:, None] * stride_wk + w_cols, mask=(kk[:, None] < n_in) & cols_in, other=0.0)
        z = mma(a, w, z, PRECISION)

    # hidden layers: h_l = relu(z), stored (the update and the relu mask read it); z = h_l @ w_l
    for layer in range(1, L):
        h = tl.maximum(z, 0.0)
        h_width = layer_field(table_ptr, layer, N_IN)
        tl.store(layer_ptr(table_ptr, layer, IN_ADDR) + rows[:, None] * layer_field(table_ptr, layer, IN_SROW)
                 + cols[None, :] * layer_field(table_ptr, layer, IN_SCOL), h,
                 mask=rows_in[:, None] & (cols[None, :] < h_width))
        w_layer = tl.load(layer_ptr(table_ptr, layer, W_ADDR) + wrows[:, None] * layer_field(table_ptr, layer, W_SROW)
                          + cols[None, :] * layer_field(table_ptr, layer, W_SCOL),
                          mask=(wrows[:, None] < h_width) & (cols[None, :] < layer_field(table_ptr, layer, N_OUT)),
                          other=0.0)
        z = mma(h, w_layer, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION)

    # output: diff = y_pred - y (zero outside the tensor), grad_y = 2*diff, this block's loss partial
    last = L - 1
    inside = rows_in[:, None] & (cols[None, :] < layer_field(table_ptr, last, N_OUT))
    y = tl.load(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn, mask=inside, other=0.0)
    diff = tl.where(inside, z - y, 0.0)
    g = 2.0 * diff
    tl.store(layer_ptr(table_ptr, last, G_ADDR) + rows[:, None] * layer_field(table_ptr, last, G_SROW)
             + cols[None, :], g, mask=inside)
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.sum(diff * diff, axis=1), axis=0))

    # backward, last layer first: grad_h_l = mask(g @ w_l^T); h_l was stored above by this program's
    # threads, so a barrier makes it visible to all of them before the relu mask reads it
    tl.debug_barrier()
    for i in range(0, L - 1):
        layer = L - 1 - i
        h_width = layer_field(table_ptr, layer, N_IN)
        # w_l^T [n_out, n_in]: element (r, c) is w_l[c, r]
        w_t = tl.load(layer_ptr(table_ptr, layer, W_ADDR) + wrows[:, None] * layer_field(table_ptr, layer, W_SCOL)
                      + cols[None, :] * layer_field(table_ptr, layer, W_SROW),
                      mask=(wrows[:, None] < layer_field(table_ptr, layer, N_OUT)) & (cols[None, :] < h_width),
                      other=0.0)
        g = mma(g, w_t, tl.zeros((BLOCK_M, WIDTH), dtype=tl.float32), PRECISION)
        in_h = rows_in[:, None] & (cols[None, :] < h_width)
        if MODE == "relu":
            h_old = tl.load(layer_ptr(table_ptr, layer, IN_ADDR) + rows[:, None] * layer_field(table_ptr, layer, IN_SROW)
                            + cols[None, :] * layer_field(table_ptr, layer, IN_SCOL), mask=in_h, other=0.0)
            g = tl.where(h_old > 0, g, 0.0)
        else:
            g = tl.maximum(g, 0.0)
        tl.store(layer_ptr(table_ptr, layer - 1, G_ADDR) + rows[:, None] * layer_field(table_ptr, layer - 1, G_SROW)
                 + cols[None, :], g, mask=in_h)


@triton.jit
def mlp_update_kernel(table_ptr, tile_ptr, partial_ptr, n_partials, loss_ptr, lr, B,
                      PRECISION: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_B: tl.constexpr,
                      WIDTH: tl.constexpr, PARTIALS_BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    layer = tl.load(tile_ptr + 2 * pid)
    r = tl.load(tile_ptr + 2 * pid + 1) + tl.arange(0, BLOCK_R).to(tl.int64)    # this tile's rows of w_l
    c = tl.arange(0, WIDTH).to(tl.int64)
    r_in = r[:, None] < layer_field(table_ptr, layer, N_IN)
    c_in = c[None, :] < layer_field(table_ptr, layer, N_OUT)
    a_ptr = layer_ptr(table_ptr, layer, IN_ADDR)
    a_rows = r[:, None] * layer_field(table_ptr, layer, IN_SCOL)     # a_l^T: its rows are a_l's columns
    stride_ab = layer_field(table_ptr, layer, IN_SROW)
    g_ptr = layer_ptr(table_ptr, layer, G_ADDR)
    stride_gb = layer_field(table_ptr, layer, G_SROW)
    offs_b = tl.arange(0, BLOCK_B).to(tl.int64)
    acc = tl.zeros((BLOCK_R, WIDTH), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):     # the weight gradient sums over the whole batch
        bb = b0 + offs_b
        a_t = tl.load(a_ptr + a_rows + bb[None, :] * stride_ab, mask=r_in & (bb[None, :] < B), other=0.0)
        g = tl.load(g_ptr + bb[:, None] * stride_gb + c[None, :], mask=(bb[:, None] < B) & c_in, other=0.0)
        acc = mma(a_t, g, acc, PRECISION)
    w_ptrs = layer_ptr(table_ptr, layer, W_ADDR) + r[:, None] * layer_field(table_ptr, layer, W_SROW) \
        + c[None, :] * layer_field(table_ptr, layer, W_SCOL)
    w = tl.load(w_ptrs, mask=r_in & c_in, other=0.0)
    tl.store(w_ptrs, w - lr * acc, mask=r_in & c_in)

    if pid == 0:    # the loss: the row blocks' partials in a fixed order
        total = tl.zeros((PARTIALS_BLOCK,), dtype=tl.float32)
        for start in range(0, n_partials, PARTIALS_BLOCK):
            offs = start + tl.arange(0, PARTIALS_BLOCK)
            total += tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
        tl.store(loss_ptr, tl.sum(total, axis=0))


def fits(weights):
    """Whether a network (its weights [in, out] per layer) can take the two-launch step."""
    return all(w.shape[1] <= MAX_WIDTH for w in weights)


def default_config(batch, features, width, precision):
    """Blocks for both kernels. Under the interpreter: large blocks (few programs). On the GPU:
    "ieee" (fp32 FMA) takes 16-row blocks, for more programs on the seed's 100 rows; tf32 and bf16
    take 64-row tiles, the smallest that Hopper's warpgroup MMA (wgmma) works on."""
    if INTERPRET:
        return dict(rows=dict(BLOCK_M=pow2_block(batch), BLOCK_K=pow2_block(features)),
                    update=dict(BLOCK_R=pow2_block(features), BLOCK_B=pow2_block(batch)))
    if precision == "ieee":
        return dict(rows=dict(BLOCK_M=16, BLOCK_K=32, num_warps=4, num_stages=3),
                    update=dict(BLOCK_R=32, BLOCK_B=32, num_warps=4, num_stages=3))
    return dict(rows=dict(BLOCK_M=64, BLOCK_K=32, num_warps=4, num_stages=3),
                update=dict(BLOCK_R=64, BLOCK_B=32, num_warps=4, num_stages=3))


class FusedMLPStep:
    """One SGD step of a narrow bias-free ReLU network on fixed tensors, as two kernel launches.

    Args:
        x: [B, D] float32 input; y: [B, O] float32 target.
        weights: [w_0 [D, n_1], ..., w_{L-1} [n_{L-1}, O]] float32, updated in place; every n_l and O
            at most MAX_WIDTH (see fits()).
        lr: positive learning rate.
        mode: "relu" (grad_h masked where h <= 0) or "tutorial" (grad_h clamped at 0, the seed's).
        precision: "ieee", "tf32" or "bf16".
        config: dict(rows=dict(BLOCK_M, BLOCK_K[, num_warps, num_stages]), update=dict(BLOCK_R,
            BLOCK_B[, ...])); default default_config(). Tests pass small blocks to force ragged tiles.

    Owns its buffers: ``acts`` (h_1..h_{L-1}), ``grads`` (grad_h_1..grad_h_{L-1}, then grad_y =
    2*(y_pred - y)) and ``partials`` (one loss partial per row block). ``step(loss_out)`` writes the
    loss (before the update) into the 0-d float32 ``loss_out`` and updates the weights.
    """

    def __init__(self, x, y, weights, *, lr, mode="relu", precision="ieee", config=None):
        check_precision(precision)
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr: expected a positive number, got {lr!r}")
        check_matrix("x", x)
        device = x.device
        if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)) or not weights:
            raise TypeError(f"weights: expected a non-empty list of tensors, got {type(weights).__name__}")
        (B, D), width = x.shape, x.shape[1]
        for i, w in enumerate(weights):
            check_matrix(f"weights[{i}]", w, device)
            check_shape(f"weights[{i}]", w, (width, w.shape[1]))
            if w.shape[1] > MAX_WIDTH:
                raise ValueError(f"weights[{i}]: the two-launch step takes layers at most {MAX_WIDTH} wide, "
                                 f"got shape {tuple(w.shape)} (use the per-layer kernels)")
            width = w.shape[1]
        check_matrix("y", y, device)
        check_shape("y", y, (B, width))
        reads = [("x", x), ("y", y)]
        for i, w in enumerate(weights):
            check_writable(f"weights[{i}]", w, reads=reads + [(f"weights[{j}]", v) for j, v in enumerate(weights)
                                                              if j != i])
        self.x, self.y, self.weights = x, y, list(weights)
        self.lr, self.mode, self.precision = float(lr), mode, precision
        self.width = pow2_block(max(w.shape[1] for w in weights))
        config = config or default_config(B, D, self.width, precision)
        self.rows_config, self.update_config = dict(config["rows"]), dict(config["update"])

        new = lambda cols: torch.empty(B, cols, dtype=torch.float32, device=device)  # noqa: E731
        self.acts = [new(w.shape[1]) for w in weights[:-1]]
        self.grads = [new(w.shape[1]) for w in weights]
        inputs = [x] + self.acts
        table = [[a.data_ptr(), a.stride(0), a.stride(1), w.data_ptr(), w.stride(0), w.stride(1),
                  g.data_ptr(), g.stride(0), w.shape[0], w.shape[1]]
                 for a, w, g in zip(inputs, weights, self.grads)]
        self.table = torch.tensor(table, dtype=torch.int64, device=device)
        block_r = self.update_config["BLOCK_R"]
        tiles = [(layer, r0) for layer, w in enumerate(weights) for r0 in range(0, w.shape[0], block_r)]
        self.tiles = torch.tensor(tiles, dtype=torch.int64, device=device)
        self.partials = torch.empty(triton.cdiv(B, self.rows_config["BLOCK_M"]), dtype=torch.float32, device=device)
        n = self.partials.numel()
        self.launch_rows = prepare_launch(
            mlp_rows_kernel, None, (n,), self.rows_config, None,
            table_ptr=self.table, y_ptr=y, partial_ptr=self.partials, B=B, L=len(weights),
            stride_ym=y.stride(0), stride_yn=y.stride(1), MODE=mode, PRECISION=precision, WIDTH=self.width)
        self.launch_update = prepare_launch(      # each step passes its own loss slot as loss_ptr
            mlp_update_kernel, None, (self.tiles.shape[0],), self.update_config, None,
            table_ptr=self.table, tile_ptr=self.tiles, partial_ptr=self.partials, n_partials=n,
            loss_ptr=self.partials, lr=self.lr, B=B, PRECISION=precision, WIDTH=self.width,
            PARTIALS_BLOCK=min(1024, triton.next_power_of_2(n)))

    def step(self, loss_out):
        """Two launches: rows (forward, loss partials, backward), then every weight's update and the loss."""
        check_scalar_out("loss_out", loss_out, self.x.device)
        self.launch_rows()
        self.launch_update(loss_ptr=loss_out)
        return loss_out

    __call__ = step
