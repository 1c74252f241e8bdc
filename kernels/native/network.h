// The network a native run trains: its parameters and optimizer state (Python's tensors, updated in place),
// the buffers for a batch of up to `capacity` rows, one training step on given rows and the forward pass
// that scores rows (runner.cpp's Step and Epochs drive it). Included by runner.cpp only.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blas.h"
#include "step_math.h"

namespace manualnn_native {

using Tensors = std::vector<at::Tensor>;

// Network::blocks() and small(): a block has at least kBlockRows rows, a batch at most kMaxBlocks blocks; a
// network of more than kBlockedParams parameters, or whose plain SGD folds into its GEMM, is never split; a
// pass of at most kSmallWork rows x parameters is small. kPartsGrain: elements a thread takes at least when
// the blocks' gradients are added. kBlockRows 48: two blocks from 96 rows, as a 225-row set's even batches of
// 113 and 112 rows are (AMD EPYC, 2 cores: 41 us a 113 x 20 -> 512 -> 1 step on two threads, 65 on one; from
// 128 rows, its batches ran on one thread).
constexpr int64_t kBlockRows = 48, kMaxBlocks = 8, kBlockedParams = int64_t(1) << 20;
constexpr int64_t kSmallWork = int64_t(1) << 22, kPartsGrain = 4096;
static_assert(kMaxBlocks >= 2, "a batch of 2 * kBlockRows rows is stepped in blocks");

inline bool blockable(int64_t params, bool fold) { return !fold && params <= kBlockedParams; }

// Whether a step or scoring pass of `rows` rows runs every BLAS call on one thread whatever torch's count
// (in blocks of rows, or as a small pass, with MKL held to its thread): manualnn/training/threads.py leaves
// such products out of its comparison by thread count. False where the BLAS is not MKL (OneBlasThread then
// holds nothing: a small pass's calls may run on BLAS's own threads).
inline bool one_blas_thread(int64_t rows, int64_t params, bool fold) {
  return OneBlasThread::holds() && blockable(params, fold) && (rows >= 2 * kBlockRows || rows * params <= kSmallWork);
}

// The step's settings (manualnn.spec.StepSpec, resolved for this network and batch).
struct Settings {
  bool bias, relu_mode, cross_entropy, mean, fold;
  std::vector<int64_t> decayed_rows;  // per layer: the leading rows weight decay reaches (not the bias row)
  OptimizerKind kind;
  double factor, lr, weight_decay, momentum, beta1, beta2, eps;
  // What the output error is scaled by for a batch of `rows` (the mean's divisor over every rank's rows):
  // the loss's constant, and 1/rows for "mean" (a 0-row batch's gradients are 0 whatever it is).
  double scale(double rows) const { return mean ? factor / std::max(rows, 1.0) : factor; }
};

// ``fold`` and ``decayed_rows`` come from Python (StepSpec.folds_sgd, Params.decayed_rows): each rule in one place.
inline Settings make_settings(bool bias, bool fold, std::vector<int64_t> decayed_rows, const std::string& grad,
                              const std::string& loss, const std::string& reduction, const std::string& optimizer,
                              double lr, double weight_decay, double momentum, double beta1, double beta2,
                              double eps) {
  TORCH_CHECK(grad == "relu" || grad == "tutorial", "grad: expected 'relu' or 'tutorial', got '", grad, "'");
  TORCH_CHECK(loss == "sse" || loss == "ce", "loss: expected 'sse' or 'ce', got '", loss, "'");
  TORCH_CHECK(reduction == "sum" || reduction == "mean", "reduction: expected 'sum' or 'mean', got '", reduction,
              "'");
  Settings s;
  s.bias = bias;
  s.relu_mode = grad == "relu";
  s.cross_entropy = loss == "ce";
  s.mean = reduction == "mean";
  s.kind = optimizer_kind(optimizer);
  TORCH_CHECK(!fold || s.kind == OptimizerKind::kSgd, "fold: only plain SGD folds into the gradient's GEMM");
  s.fold = fold;
  s.decayed_rows = std::move(decayed_rows);
  s.factor = s.cross_entropy ? 1.0 : 2.0;
  s.lr = lr;
  s.weight_decay = weight_decay;
  s.momentum = momentum;
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.eps = eps;
  return s;
}

// A row-major buffer of `rows` rows of `cols` values whose rows start 64-byte aligned, with a last column of
// ones when `ones` (a hidden layer's [h, 1]).
inline at::Tensor make_rows(int64_t rows, int64_t cols, bool ones, const at::TensorOptions& options) {
  const int64_t width = cols + (ones ? 1 : 0);
  const int64_t per_line = 64 / options.dtype().itemsize();
  const int64_t ld = (width + per_line - 1) / per_line * per_line;
  at::Tensor buffer = at::zeros({std::max<int64_t>(rows, 1), ld}, options);
  if (ones) buffer.narrow(1, cols, 1).fill_(1.0);
  return buffer.narrow(0, 0, rows).narrow(1, 0, width);
}

// The network, its optimizer and the buffers for a batch of up to `capacity` rows: one training step on
// given rows, and the forward pass that scores rows.
class Network {
 public:
  Network(Tensors params, Tensors grads, Tensors momentum_buffers, Tensors exp_avgs, Tensors exp_avg_sqs,
          at::Tensor step_count, at::Tensor powers, const Settings& settings, int64_t capacity)
      : params_(params), grads_(grads), momentum_(momentum_buffers), exp_avg_(exp_avgs), exp_avg_sq_(exp_avg_sqs),
        step_count_(step_count), powers_(powers), s_(settings), capacity_(capacity) {
    const size_t n_layers = params.size();
    TORCH_CHECK(n_layers > 0, "params: expected at least one layer");
    const at::Tensor& p0 = params[0];
    TORCH_CHECK(p0.device().is_cpu() && (p0.scalar_type() == at::kFloat || p0.scalar_type() == at::kDouble),
                "params[0]: expected a float32 or float64 CPU tensor, got ", p0.scalar_type(), " on ", p0.device());
    for (size_t i = 0; i < n_layers; ++i) {
      const at::Tensor& p = params[i];
      TORCH_CHECK(p.device().is_cpu() && p.scalar_type() == p0.scalar_type() && p.dim() == 2 && p.is_contiguous(),
                  "params[", i, "]: expected a contiguous 2-D CPU tensor of dtype ", p0.scalar_type(), ", got ",
                  p.scalar_type(), " ", p.sizes(), " on ", p.device());
      if (i > 0) {
        const int64_t want = params[i - 1].size(1) + (s_.bias ? 1 : 0);
        TORCH_CHECK(p.size(0) == want, "params[", i, "]: expected ", want, " rows (layer ", i - 1, "'s outputs",
                    s_.bias ? " and the bias row" : "", "), got ", p.size(0));
      }
      widths_.push_back(p.size(1));
      param_count_ += p.numel();
    }
    TORCH_CHECK(s_.decayed_rows.size() == n_layers, "decayed_rows: expected ", n_layers, " counts, got ",
                s_.decayed_rows.size());
    for (size_t i = 0; i < n_layers; ++i) {
      TORCH_CHECK(0 <= s_.decayed_rows[i] && s_.decayed_rows[i] <= params[i].size(0), "decayed_rows[", i,
                  "]: expected 0..", params[i].size(0), ", got ", s_.decayed_rows[i]);
    }
    if (!s_.fold && grads_.empty()) {  // the optimizer needs gradient buffers even when Python gave none
      for (const auto& p : params) grads_.push_back(at::empty_like(p));
    }
    TORCH_CHECK(grads_.empty() || grads_.size() == n_layers, "grads: expected ", n_layers, " tensors, got ",
                grads_.size());
    for (size_t i = 0; i < grads_.size(); ++i) check_like(grads_[i], params[i], "grads", i);
    if (s_.kind == OptimizerKind::kMomentum) check_state(momentum_, "momentum_buffers");
    if (s_.kind == OptimizerKind::kAdam) {
      check_state(exp_avg_, "exp_avgs");
      check_state(exp_avg_sq_, "exp_avg_sqs");
    }
    TORCH_CHECK(step_count.device().is_cpu() && step_count.scalar_type() == at::kLong && step_count.dim() == 0,
                "step_count: expected a 0-d int64 CPU tensor, got ", step_count.scalar_type(), " ",
                step_count.sizes());
    TORCH_CHECK(powers.device().is_cpu() && powers.scalar_type() == at::kDouble && powers.numel() == 2 &&
                    powers.is_contiguous(),
                "powers: expected a contiguous float64 CPU tensor of 2 elements, got ", powers.scalar_type(), " ",
                powers.sizes());
    const auto options = p0.options();
    for (size_t l = 0; l + 1 < n_layers; ++l) {
      acts_.push_back(make_rows(capacity, widths_[l], s_.bias, options));
      grad_hs_.push_back(at::empty({capacity, widths_[l]}, options));
    }
    error_ = at::empty({capacity, widths_.back()}, options);
    for (int64_t b = 1; b < blocks(capacity); ++b) {  // the gradients of each block after the first
      parts_.emplace_back();
      for (const auto& p : params) parts_.back().push_back(at::empty_like(p));
    }
    block_scratch_.resize(size_t(blocks(capacity)));
  }

  // A batch of `rows` rows is stepped as this many blocks of consecutive rows: each block's forward pass,
  // error and backward pass on one thread with its own gradients, the blocks side by side on torch's
  // threads, then the gradients added in block order. So a block's values stay in its core's caches (a
  // 200 x 512 layer's values moving between cores from one product to the next cost more than a second
  // thread saves), and the result depends on the rows alone, never on the thread count. A power of two,
  // blocks of at least kBlockRows rows; one block (the whole batch, on BLAS's own threads unless small())
  // for fewer rows, for SGD folded into its GEMM (the seed's step) and for networks too large for a copy of
  // the gradients per block to be cheap.
  int64_t blocks(int64_t rows) const {
    if (!blockable(param_count_, s_.fold)) return 1;
    int64_t n = 1;
    while (n < kMaxBlocks && rows >= 2 * n * kBlockRows) n *= 2;
    return n;
  }

  // A step too small for blocks whose products BLAS runs on the calling thread (a batch of a few dozen rows: its
  // products split over two threads took 45 us where one takes 24, a 27 x 20 -> 512 -> 1 step); its rows
  // are where block 0's are, on this thread.
  bool small(int64_t rows) const { return blockable(param_count_, s_.fold) && rows * param_count_ <= kSmallWork; }

  int64_t layers() const { return int64_t(params_.size()); }
  int64_t inputs() const { return params_[0].size(0); }
  int64_t outputs() const { return widths_.back(); }
  int64_t capacity() const { return capacity_; }
  at::ScalarType dtype() const { return params_[0].scalar_type(); }
  bool has_grads() const { return !grads_.empty(); }
  const Settings& settings() const { return s_; }
  const at::Tensor& error() const { return error_; }

  // Forward and loss on `rows` rows (x: [rows, in(+1)] with row stride ldx; y: their targets). Leaves the
  // output error in error_ and returns the batch's loss, summed over its rows (block by block, see blocks()).
  template <typename T>
  double forward_loss(const T* x, int64_t ldx, Rows<T> y, int64_t rows) {
    std::array<double, kMaxBlocks> losses{};
    for_blocks(rows, [&](int64_t b, int64_t r0, int64_t r1) {
      losses[size_t(b)] = block_forward_loss(x + r0 * ldx, ldx, y, r0, r1 - r0, block_scratch_[size_t(b)]);
    });
    double total = 0;
    for (int64_t b = 0, n = blocks(rows); b < n; ++b) total += losses[size_t(b)];
    return total;
  }

  // Backward from error_ (forward_loss just ran on the same x and rows), first scaled by `scale` (the loss's
  // constant and the mean's 1/rows): the gradients into grads_, and with `update` the optimizer's step.
  template <typename T>
  void backward(const T* x, int64_t ldx, int64_t rows, double scale, bool update) {
    if (update && !s_.fold) begin_update();
    // one block: each layer's update as soon as its gradient is made (its w was read for grad_h first);
    // more: the update with the blocks' gradients added, after them
    const int64_t n = blocks(rows);
    for_blocks(rows, [&](int64_t b, int64_t r0, int64_t r1) {
      block_backward(x + r0 * ldx, ldx, r0, r1 - r0, scale, b, update && n == 1);
    });
    if (n > 1) {
      for (int64_t i = 0; i < layers(); ++i) add_parts<T>(i, n, update);
    }
  }

  // The optimizer's update from grads_ (after backward(update=false) and, say, an all-reduce).
  template <typename T>
  void update_from_grads() {
    begin_update();
    for (int64_t i = 0; i < layers(); ++i) apply_update<T>(i);
  }

  // The outputs z [rows, out] of `rows` rows of x, computed in the scoring buffers (see ScoreBuffers): in the
  // blocks of rows a step of as many rows would take (blocks()), side by side, or as one small pass on the
  // calling thread, as a step. (The validation pass of a digits run, 360 rows on two threads: 231-236 us an
  // epoch with BLAS's own threads, 166-171 in blocks.)
  template <typename T>
  const T* outputs(const T* x, int64_t ldx, int64_t rows, Tensors& acts, at::Tensor& z) {
    for_blocks(rows, [&](int64_t, int64_t r0, int64_t r1) { block_outputs(x + r0 * ldx, ldx, r0, r1 - r0, acts, z); });
    return z.data_ptr<T>();
  }

  // Buffers for scoring blocks of up to `rows` rows.
  void make_score_buffers(int64_t rows, Tensors& acts, at::Tensor& z) const {
    const auto options = params_[0].options();
    for (size_t l = 0; l + 1 < params_.size(); ++l) acts.push_back(make_rows(rows, widths_[l], s_.bias, options));
    z = at::empty({rows, widths_.back()}, options);
  }

 private:
  // outputs() on rows [r0, r0 + rows): x points at row r0, the buffers' rows from r0 on.
  template <typename T>
  void block_outputs(const T* x, int64_t ldx, int64_t r0, int64_t rows, Tensors& acts, at::Tensor& z) {
    int64_t ld_in = 0;
    const T* in = hidden_forward(x, ldx, rows, acts, ld_in, r0);
    const int64_t out = widths_.back();
    gemm<T>(false, false, rows, out, params_.back().size(0), T(1), in, ld_in, params_.back().data_ptr<T>(), out, T(0),
            z.data_ptr<T>() + r0 * out, out);
  }

  // Block b of n over `rows` rows starts at this row.
  static int64_t block_start(int64_t b, int64_t n, int64_t rows) { return b * rows / n; }

  // fn(b, first row, end row) for each block of a pass over `rows` rows (blocks()): one block on the calling
  // thread, its BLAS held to it where small(); more side by side on torch's threads, each thread's BLAS held
  // to that thread.
  template <typename F>
  void for_blocks(int64_t rows, const F& fn) const {
    const int64_t n = blocks(rows);
    if (n == 1) {
      OneBlasThread one(small(rows));
      fn(0, 0, rows);
      return;
    }
    at::parallel_for(0, n, 1, [&](int64_t first, int64_t last) {
      OneBlasThread one;
      for (int64_t b = first; b < last; ++b) fn(b, block_start(b, n, rows), block_start(b + 1, n, rows));
    });
  }

  // forward_loss on rows [r0, r0 + rows) of the batch: x points at row r0, the buffers' rows from r0 on.
  template <typename T>
  double block_forward_loss(const T* x, int64_t ldx, Rows<T> y, int64_t r0, int64_t rows,
                            std::vector<double>& scratch) {
    int64_t ld_in = 0;
    const T* in = hidden_forward(x, ldx, rows, acts_, ld_in, r0);
    const int64_t out = widths_.back();
    T* e = error_.data_ptr<T>() + r0 * out;
    const T* p = params_.back().data_ptr<T>();
    y.first += r0;
    if (s_.cross_entropy) {
      gemm<T>(false, false, rows, out, params_.back().size(0), T(1), in, ld_in, p, out, T(0), e, out);  // z
      return softmax_error_(e, y, rows, out, scratch);
    }
    for (int64_t r = 0; r < rows; ++r) std::memcpy(e + r * out, y.row(r), sizeof(T) * out);
    gemm<T>(false, false, rows, out, params_.back().size(0), T(1), in, ld_in, p, out, T(-1), e, out);  // z - y
    return double(dot<T>(rows * out, e, e));
  }

  // backward on rows [r0, r0 + rows) (x points at row r0): block 0's gradients into grads_ (or, for SGD
  // folded, the update into the parameters), block b's into parts_[b - 1]; with `update`, each layer's
  // update right after its gradient (one block only).
  template <typename T>
  void block_backward(const T* x, int64_t ldx, int64_t r0, int64_t rows, double scale, int64_t block, bool update) {
    T* e = error_.data_ptr<T>() + r0 * widths_.back();
    if (scale != 1.0) {
      const T factor = T(scale);
      for (int64_t k = 0, n = rows * widths_.back(); k < n; ++k) e[k] *= factor;
    }
    const T* g = e;
    int64_t ld_g = widths_.back();
    for (int64_t i = layers() - 1; i >= 0; --i) {
      const int64_t ld_a = i == 0 ? ldx : acts_[i - 1].stride(0);
      const T* a = i == 0 ? x : acts_[i - 1].data_ptr<T>() + r0 * ld_a;
      const int64_t in = params_[i].size(0), n = widths_[i];
      T* p = params_[i].data_ptr<T>();
      if (i > 0) {  // grad_h = mask(g @ w_i^T), reading w_i before its update below
        T* gh = grad_hs_[i - 1].data_ptr<T>() + r0 * widths_[i - 1];
        const T* h = a;
        if (n == 1 && rows > 1 && widths_[i - 1] > 1) {  // one output: one multiply per value, fused with the mask
          outer_relu_backward_(gh, g, ld_g, p, h, rows, widths_[i - 1], ld_a, s_.relu_mode);
        } else {
          gemm<T>(false, true, rows, widths_[i - 1], n, T(1), g, ld_g, p, n, T(0), gh, widths_[i - 1]);
          relu_backward_(gh, h, rows, widths_[i - 1], ld_a, s_.relu_mode);
        }
      }
      if (update && s_.fold) {
        gemm<T>(true, false, in, n, rows, T(-s_.lr), a, ld_a, g, ld_g, T(1.0 - s_.lr * s_.weight_decay), p, n);
      } else {
        T* grad = (block == 0 ? grads_[i] : parts_[size_t(block - 1)][i]).data_ptr<T>();
        gemm<T>(true, false, in, n, rows, T(1), a, ld_a, g, ld_g, T(0), grad, n);
        if (update) apply_update<T>(i);
      }
      if (i > 0) {
        g = grad_hs_[i - 1].data_ptr<T>() + r0 * widths_[i - 1];
        ld_g = widths_[i - 1];
      }
    }
  }

  // grads_[i] += the other blocks' gradients of layer i, in block order, then with `update` the optimizer's
  // step: one pass over the layer's elements, split over the threads (each element's sum the same whatever
  // the threads).
  template <typename T>
  void add_parts(int64_t i, int64_t n, bool update) {
    T* __restrict grad = grads_[i].data_ptr<T>();
    std::array<const T*, kMaxBlocks> parts{};
    for (int64_t b = 1; b < n; ++b) parts[size_t(b)] = parts_[size_t(b - 1)][i].data_ptr<T>();
    const LayerUpdate<T> u = layer_update<T>(i);
    at::parallel_for(0, params_[i].numel(), kPartsGrain, [&](int64_t first, int64_t last) {
      for (int64_t b = 1; b < n; ++b) {
        const T* __restrict q = parts[size_t(b)];
        for (int64_t k = first; k < last; ++k) grad[k] += q[k];
      }
      if (update) update_elements(u, first, last);
    });
  }

  // The hidden layers on `rows` rows of x (row stride ldx), each [h, 1] after its ReLU into acts from row r0
  // on: returns the output layer's input, its row stride into ld.
  template <typename T>
  const T* hidden_forward(const T* x, int64_t ldx, int64_t rows, Tensors& acts, int64_t& ld, int64_t r0 = 0) {
    const T* in = x;
    ld = ldx;
    for (size_t l = 0; l + 1 < params_.size(); ++l) {
      const int64_t ld_h = acts[l].stride(0), n = widths_[l];
      T* h = acts[l].data_ptr<T>() + r0 * ld_h;
      gemm<T>(false, false, rows, n, params_[l].size(0), T(1), in, ld, params_[l].data_ptr<T>(), n, T(0), h, ld_h);
      relu_(h, rows, n, ld_h);
      in = h;
      ld = ld_h;
    }
    return in;
  }

  void check_state(const Tensors& state, const char* name) {
    TORCH_CHECK(state.size() == params_.size(), name, ": expected ", params_.size(), " tensors, got ", state.size());
    for (size_t i = 0; i < state.size(); ++i) check_like(state[i], params_[i], name, i);
  }

  // Once per update, before any layer's apply_update: Adam's step count and bias corrections, on the
  // parameters' own state tensors (as TorchOptimizer.begin does on the device).
  void begin_update() {
    if (s_.kind != OptimizerKind::kAdam) return;
    *step_count_.data_ptr<int64_t>() += 1;
    double* pw = powers_.data_ptr<double>();
    pw[0] *= s_.beta1;
    pw[1] *= s_.beta2;
    step_size_ = s_.lr / (1.0 - pw[0]);
    corr2_sqrt_ = std::sqrt(1.0 - pw[1]);
  }

  // The optimizer's update of layer i from grads_[i], in place (the math: update_elements).
  template <typename T>
  void apply_update(int64_t i) {
    update_layer(layer_update<T>(i));
  }

  // Layer i's tensors and the step's constants for update_elements.
  template <typename T>
  LayerUpdate<T> layer_update(int64_t i) const {
    LayerUpdate<T> u;
    u.kind = s_.kind;
    u.p = params_[i].data_ptr<T>();
    u.g = grads_[i].data_ptr<T>();
    u.m = s_.kind == OptimizerKind::kMomentum ? momentum_[i].data_ptr<T>()
          : s_.kind == OptimizerKind::kAdam   ? exp_avg_[i].data_ptr<T>()
                                              : nullptr;
    u.v = s_.kind == OptimizerKind::kAdam ? exp_avg_sq_[i].data_ptr<T>() : nullptr;
    u.n = params_[i].numel();
    u.decayed = s_.weight_decay == 0.0 ? 0 : s_.decayed_rows[i] * widths_[i];  // the elements before the bias row
    u.decay = T(s_.weight_decay);
    u.neg_lr = T(-s_.lr);
    u.mu = T(s_.momentum);
    const T weight = T(1.0 - s_.beta1);  // lerp's weight
    u.small_weight = std::abs(weight) < T(0.5);
    u.coeff = u.small_weight ? weight : T(weight - T(1));
    u.b2 = T(s_.beta2);
    u.one_minus_b2 = T(1.0 - s_.beta2);
    u.eps = T(s_.eps);
    u.step_size = step_size_;
    u.corr2_sqrt = corr2_sqrt_;
    return u;
  }

  Tensors params_, grads_, momentum_, exp_avg_, exp_avg_sq_, acts_, grad_hs_;
  std::vector<Tensors> parts_;  // parts_[b - 1][i]: block b's gradient of layer i
  std::vector<std::vector<double>> block_scratch_;  // each block's softmax rows
  int64_t param_count_ = 0;
  at::Tensor step_count_, powers_, error_;
  std::vector<int64_t> widths_;
  Settings s_;
  int64_t capacity_;
  double step_size_ = 0, corr2_sqrt_ = 1;  // Adam's, set by begin_update
};

}  // namespace manualnn_native
