// The native step's element-wise math, each piece written once (included by runner.cpp only): the
// thread policy, the clamp, the ReLU backward and the optimizers' update, on CPU tensors.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace manualnn_native {

// Element counts below this run on the calling thread: waking the pool costs more than the work.
constexpr int64_t kParallelGrain = 1 << 15;

// A GEMM below this many FLOPs runs on the calling thread alone: a second thread gains nothing
// there and costs a wake-up and a barrier, which on a busy machine waits for a free core. (2-core
// machine, one thread against two: 100x100 @ 100x10 in 20 against 45-56 us under load; a whole
// 64x32->64->64->1 epoch, all GEMMs under 0.6 MFLOP, 29 against 31 us when idle.) The seed's two
// 100x1000x100 GEMMs (20 MFLOP) keep every thread.
constexpr double kParallelGemmFlops = 1e6;

// Sets ATen's (and so MKL's) intra-op thread count to 1 for its lifetime when asked, then restores it.
// Only with ATen's OpenMP backend (torch's usual build), where a change costs well under 1 us; the
// native thread-pool backend warns on every change, so there the GEMMs keep their threads.
class SingleThreadScope {
 public:
  explicit SingleThreadScope(bool on) : saved_(on && AT_PARALLEL_OPENMP ? at::get_num_threads() : 1) {
    if (saved_ > 1) at::set_num_threads(1);
  }
  ~SingleThreadScope() {
    if (saved_ > 1) at::set_num_threads(saved_);
  }

 private:
  int saved_;
};

// fn(r) for every row r of a [rows, cols] buffer, split across threads only when it is large.
template <typename F>
void for_rows(int64_t rows, int64_t cols, const F& fn) {
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r);
  });
}

// fn(begin, end) over [0, n) elements of a contiguous buffer, split likewise.
template <typename F>
void for_elements(int64_t n, const F& fn) {
  at::parallel_for(0, n, kParallelGrain, fn);
}

// clamp(min=0) in place on a [rows, cols] view with unit column stride (a row stride of its own:
// the [:, :n] part of a [h, 1] buffer). NaN stays NaN (NaN < 0 is false), as torch's relu_ does.
template <typename T>
void relu_(const at::Tensor& h) {
  T* data = h.data_ptr<T>();
  const int64_t ld = h.stride(0), cols = h.size(1);
  for_rows(h.size(0), cols, [=](int64_t r) {
    T* row = data + r * ld;
    for (int64_t c = 0; c < cols; ++c) row[c] = row[c] < T(0) ? T(0) : row[c];
  });
}

// The ReLU backward in place on grad_h [rows, n] (contiguous), h the layer's activation (a view as
// above). "relu": grad_h where h > 0, else 0: h is after the clamp, so h > 0 exactly where the
// pre-activation was, and a NaN h lets its gradient through, as torch's threshold_backward does.
// "tutorial": the seed's grad_h.clamp_(min=0), a clamp of the gradient's own values.
template <typename T>
void relu_backward_(const at::Tensor& grad_h, const at::Tensor& h, bool relu_mode) {
  T* g = grad_h.data_ptr<T>();
  const T* a = h.data_ptr<T>();
  const int64_t ld_g = grad_h.stride(0), ld_a = h.stride(0), cols = grad_h.size(1);
  for_rows(grad_h.size(0), cols, [=](int64_t r) {
    T* gr = g + r * ld_g;
    const T* ar = a + r * ld_a;
    if (relu_mode) {
      for (int64_t c = 0; c < cols; ++c) gr[c] = ar[c] <= T(0) ? T(0) : gr[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) gr[c] = gr[c] < T(0) ? T(0) : gr[c];
    }
  });
}

enum class OptimizerKind { kSgd, kMomentum, kAdam };

OptimizerKind optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "momentum") return OptimizerKind::kMomentum;
  TORCH_CHECK(name == "adam", "optimizer: expected 'sgd', 'momentum' or 'adam', got '", name, "'");
  return OptimizerKind::kAdam;
}

#if defined(__GNUC__)
#define MANUALNN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MANUALNN_ALWAYS_INLINE inline
#endif

// One layer's optimizer update: its tensors and the step's constants, in the layer's dtype T.
template <typename T>
struct LayerUpdate {
  OptimizerKind kind;
  T *p, *g, *m, *v, *root;  // parameter, gradient, momentum buffer or exp_avg, exp_avg_sq, sqrt(exp_avg_sq)
  int64_t decayed;          // elements [0, decayed) are weights (decayed); the bias row, if any, follows
  T decay, neg_lr, mu, coeff, b2, one_minus_b2, eps;
  bool small_weight;
  double step_size, corr2_sqrt;  // Adam's lr / (1 - beta1^t) and sqrt(1 - beta2^t), in double
};

// The optimizers' math on elements [begin, end) of a layer: the one definition here, element for
// element TorchOptimizer.apply's torch ops, whose CPU kernels round `a + alpha * b`, lerp and addcmul
// as fused multiply-adds (std::fma here). Weight decay (g += wd * p) reaches the weights only, never
// the bias row, and is written into the gradient as torch does. Adam runs in two passes around
// at::sqrt_out (adam_step=false: the moments; true: the parameter):
//   m.lerp_(g, 1 - b1)          torch's lerp: from m when its weight is under 0.5, else from g
//   v = b2 * v + (1 - b2) * g * g
//   p -= step_size * m / (sqrt(v) / corr2_sqrt + eps)   the float64 factors applied in double, as
//                               torch's type promotion with a float64 tensor does for float32
template <typename T>
MANUALNN_ALWAYS_INLINE void update_elements(const LayerUpdate<T>& u, bool adam_step, int64_t begin, int64_t end) {
  T *p = u.p, *g = u.g, *m = u.m, *v = u.v;
  if (adam_step) {
    for (int64_t k = begin; k < end; ++k) {
      const T denom = static_cast<T>(double(u.root[k]) / u.corr2_sqrt) + u.eps;
      p[k] = p[k] - static_cast<T>(double(T(m[k] / denom)) * u.step_size);
    }
    return;
  }
  for (int64_t k = begin; k < std::min(end, u.decayed); ++k) g[k] = std::fma(u.decay, p[k], g[k]);
  switch (u.kind) {
    case OptimizerKind::kSgd:
      for (int64_t k = begin; k < end; ++k) p[k] = std::fma(u.neg_lr, g[k], p[k]);
      break;
    case OptimizerKind::kMomentum:
      for (int64_t k = begin; k < end; ++k) {
        m[k] = T(m[k] * u.mu) + g[k];
        p[k] = std::fma(u.neg_lr, m[k], p[k]);
      }
      break;
    case OptimizerKind::kAdam:
      for (int64_t k = begin; k < end; ++k) {
        m[k] = std::fma(u.coeff, T(g[k] - m[k]), u.small_weight ? m[k] : g[k]);
        v[k] = std::fma(T(u.one_minus_b2 * g[k]), g[k], T(v[k] * u.b2));
      }
      break;
  }
}

// On x86-64, a clone of the loops for CPUs with FMA (picked when the library loads): there std::fma is
// one vectorised instruction, not a libm call per element (the default build targets plain x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define MANUALNN_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define MANUALNN_FMA_CLONES
#endif

MANUALNN_FMA_CLONES void update_range(const LayerUpdate<float>& u, bool adam_step, int64_t begin, int64_t end) {
  update_elements(u, adam_step, begin, end);
}

MANUALNN_FMA_CLONES void update_range(const LayerUpdate<double>& u, bool adam_step, int64_t begin, int64_t end) {
  update_elements(u, adam_step, begin, end);
}

void check_like(const at::Tensor& t, const at::Tensor& like, const char* what, size_t i) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.sizes() == like.sizes() &&
                  t.is_contiguous(),
              what, "[", i, "]: expected a contiguous CPU tensor of dtype ", like.scalar_type(), " and shape ",
              like.sizes(), " (like params[", i, "]), got ", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

}  // namespace manualnn_native
