// The native step's element-wise math, each piece written once (included by runner.cpp only): the
// clamp, the ReLU backward, the output error and loss, the optimizers' update, and the scoring of
// validation rows. Plain loops over raw pointers; the large ones split over torch's threads (at::parallel_for,
// the OpenMP pool the GEMMs use: the extension is compiled with -fopenmp and shares torch's libgomp), each
// thread on the rows a GEMM just wrote, so no row's data crosses between cores' caches more than it must.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define MANUALNN_HAS_MXCSR 1
#endif

namespace manualnn_native {

// Subnormal floats flushed to zero while the runner works, on this thread and on each of torch's OpenMP
// threads it uses (the GEMMs' and the loops' other threads: the mode is per thread), then everyone's mode back.
// Adam's moments decay into the subnormal range for weights that stop getting gradient (a dead unit, a
// pixel that is always 0), and so do some gradients; each operation on a subnormal takes a microcode
// assist: with them a digits epoch ran twice as slow, and a second thread without the mode made two
// threads slower than one. Values below 1e-38 in float32 (1e-308 in float64) change no result the tests
// or users can see; JAX's CPU backend flushes them the same way.
class FlushSubnormals {
 public:
  explicit FlushSubnormals(int threads = 1) {
#ifdef MANUALNN_HAS_MXCSR
    original_ = _mm_getcsr();
#endif
    cover(threads);
  }

  // The mode on the first `threads` of torch's OpenMP threads too (those already covered are left alone). A
  // run that stays on one thread never wakes the others: on a busy machine waking one costs milliseconds.
  void cover(int threads) {
    threads = std::max(threads, 1);
    if (threads <= covered_) return;
#ifdef MANUALNN_HAS_MXCSR
    // A thread the region starts copies this thread's mode: this thread takes its own mode back meanwhile,
    // so that what a new thread saves (and gets back at the end) is the mode it would have had.
    _mm_setcsr(original_);
    saved_.resize(size_t(threads), original_);
    const int from = covered_;
    int team = 1;
    each_thread(threads, [this, from, &team](int t) {
      if (t == 0) {
        team = omp_threads();
        _mm_setcsr(original_ | kFlush);
        return;
      }
      if (t < from || size_t(t) >= saved_.size()) return;
      saved_[size_t(t)] = _mm_getcsr();
      _mm_setcsr(saved_[size_t(t)] | kFlush);
    });
    covered_ = std::max(covered_, team);  // a smaller team than asked for (OMP_DYNAMIC): the rest another time
#else
    covered_ = threads;
#endif
  }

  ~FlushSubnormals() {
#ifdef MANUALNN_HAS_MXCSR
    each_thread(covered_, [this](int t) {
      if (t == 0) {
        _mm_setcsr(original_);
      } else if (size_t(t) < saved_.size()) {
        _mm_setcsr(saved_[size_t(t)]);
      }
    });
#endif
  }

 private:
  static constexpr unsigned int kFlush = 0x8040;  // FTZ (bit 15) and DAZ (bit 6)

  static int omp_threads() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
  }

  template <typename F>
  static void each_thread(int threads, const F& fn) {
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
      fn(omp_get_thread_num());
      return;
    }
#endif
    fn(0);
  }

  int covered_ = 0;
  unsigned int original_ = 0;           // this thread's mode before the runner's
  std::vector<unsigned int> saved_;     // each other thread's (index 0 unused: original_)
};

// Subnormals flushed on the calling thread alone, for a block: a thread of a parallel region whose work
// stays on it (the L2 search's fits, runner.cpp's fold_losses), its own mode back at the end.
class FlushHere {
 public:
  FlushHere() {
#ifdef MANUALNN_HAS_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040);  // FTZ and DAZ, as FlushSubnormals
#endif
  }
  ~FlushHere() {
#ifdef MANUALNN_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  FlushHere(const FlushHere&) = delete;
  FlushHere& operator=(const FlushHere&) = delete;

 private:
  unsigned int saved_ = 0;
};

// Row r of a [rows, cols] matrix with row stride ld, optionally through a row index (a shuffled order).
template <typename T>
struct Rows {
  const T* base = nullptr;
  int64_t ld = 0;
  const int64_t* index = nullptr;  // nullptr: rows in order
  int64_t first = 0;               // the batch's first position in the order
  const T* row(int64_t r) const { return base + (index ? index[first + r] : first + r) * ld; }
};

// Elements below this stay on the calling thread: waking another costs more than the work.
constexpr int64_t kParallelGrain = 1 << 14;

// fn(first, last) over the rows [0, rows) of a [rows, cols] buffer, split over torch's threads when large.
template <typename F>
void for_rows(int64_t rows, int64_t cols, const F& fn) {
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)), fn);
}

// clamp(min=0) in place on rows x cols with row stride ld. NaN stays NaN (NaN < 0 is false), as torch's relu_.
template <typename T>
void relu_(T* h, int64_t rows, int64_t cols, int64_t ld) {
  for_rows(rows, cols, [=](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      T* row = h + r * ld;
      for (int64_t c = 0; c < cols; ++c) row[c] = row[c] < T(0) ? T(0) : row[c];
    }
  });
}

// The ReLU backward in place on grad_h [rows, cols] (contiguous), h the layer's activation (row stride ld_h).
// "relu": grad_h where h > 0, else 0 (h is after the clamp, so h > 0 exactly where the pre-activation was; a
// NaN h lets its gradient through, as torch's threshold_backward does). "tutorial": the seed's
// grad_h.clamp_(min=0), a clamp of the gradient's own values.
template <typename T>
void relu_backward_(T* g, const T* h, int64_t rows, int64_t cols, int64_t ld_h, bool relu_mode) {
  for_rows(rows, cols, [=](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      T* gr = g + r * cols;
      const T* hr = h + r * ld_h;
      if (relu_mode) {
        for (int64_t c = 0; c < cols; ++c) gr[c] = hr[c] <= T(0) ? T(0) : gr[c];
      } else {
        for (int64_t c = 0; c < cols; ++c) gr[c] = gr[c] < T(0) ? T(0) : gr[c];
      }
    }
  });
}

// grad_h = mask(g @ w^T) for a layer with one output (w: [cols] of the layer's parameter column, g: [rows]
// with row stride ld_g), in one pass: a product over an inner dimension of one is g[r] * w[c] alone, a
// single rounded multiply, and MKL's GEMM gives exactly those bits where rows and cols both exceed one
// (tests/test_native.py compares them); with one row or one column MKL takes another path that turns a
// -0.0 product into +0.0, so network.h keeps the GEMM there. Then relu_backward_'s mask. It saves the
// product's pass over grad_h and the mask's second one (a regression network's 200 x 512 step: 12.6 + ~8 us
// as two passes).
template <typename T>
void outer_relu_backward_(T* gh, const T* g, int64_t ld_g, const T* w, const T* h, int64_t rows, int64_t cols,
                          int64_t ld_h, bool relu_mode) {
  for_rows(rows, cols, [=](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      T* out = gh + r * cols;
      const T* hr = h + r * ld_h;
      const T gr = g[r * ld_g];
      if (relu_mode) {  // the product first, every time: a conditional multiply is not vectorised
        for (int64_t c = 0; c < cols; ++c) {
          const T v = gr * w[c];
          out[c] = hr[c] <= T(0) ? T(0) : v;
        }
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          const T v = gr * w[c];
          out[c] = v < T(0) ? T(0) : v;
        }
      }
    }
  });
}

// exp(x) for x <= 0 (a softmax's z - max) in a form the compiler vectorises, where std::exp is a call per
// value (2,000 of a 200-row, 10-class batch: 5.9 us against 2.4 us here): 2^k * p(r) with k = round(x / ln 2),
// r = x - k ln 2 (in two parts), p the degree-13 Taylor polynomial; within 2.3e-16 (relative) of std::exp
// over 10 million x in [-60, 0]. Below -708 it is 0 (exp(-708) = 3e-308, about the smallest normal double);
// NaN stays NaN.
inline double exp_nonpositive(double x) {
  constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10;
  const double xc = x < -708.0 ? -708.0 : x;  // NaN < -708 is false: NaN goes on
  const double kf = std::nearbyint(xc * kLog2e);
  const double r = (xc - kf * kLn2Hi) - kf * kLn2Lo;
  double p = 1.0 / 6227020800.0;  // 1/13!, then Horner down to 1/0!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t k = static_cast<int64_t>(kf == kf ? kf : 0.0);  // -1022..0
  const uint64_t bits = static_cast<uint64_t>(k + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -708.0 ? 0.0 : p * scale;
}

// A row's exps are kept (on the stack) for rows of up to this many outputs; wider rows take each twice.
constexpr int64_t kKeptExps = 64;

// sum(exp(z - top)) over a row of z, top the row's max (into `top`); with `kept`, each exp into it too. The
// loss's log-sum-exp is top + log(the sum), the same numbers for training and for validation.
template <typename T>
double row_exp_sum(const T* z, int64_t cols, double* kept, double& top) {
  top = -INFINITY;
  for (int64_t c = 0; c < cols; ++c) top = std::max(top, double(z[c]));
  double sum = 0;
  if (kept) {
    for (int64_t c = 0; c < cols; ++c) kept[c] = exp_nonpositive(double(z[c]) - top);  // (vectorised)
    for (int64_t c = 0; c < cols; ++c) sum += kept[c];
  } else {
    for (int64_t c = 0; c < cols; ++c) sum += exp_nonpositive(double(z[c]) - top);
  }
  return sum;
}

// softmax_error_'s rows, kLanes at a time: each lane of these loops is one row, so the exps, sums and errors
// run on kLanes rows at once in vector registers (a row of 10 outputs alone fills one vector and a bit); every
// lane does one row's operations in that row's order, so the numbers are the row-at-a-time loop's.
constexpr int64_t kLanes = 8;

// "ce" on rows [first, first + count) (count <= kLanes, cols <= kKeptExps) of z: see softmax_error_.
template <typename T>
void softmax_lanes(T* z, const Rows<T>& y, int64_t first, int64_t count, int64_t cols, double* out) {
  double v[kKeptExps][kLanes], ex[kKeptExps][kLanes], top[kLanes], sum[kLanes], lse[kLanes], inv[kLanes],
      s[kLanes];
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t l = 0; l < kLanes; ++l) v[c][l] = l < count ? double(z[(first + l) * cols + c]) : 0.0;
  }
  for (int64_t l = 0; l < kLanes; ++l) top[l] = -INFINITY;
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t l = 0; l < kLanes; ++l) top[l] = std::max(top[l], v[c][l]);
  }
  for (int64_t l = 0; l < kLanes; ++l) sum[l] = 0;
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t l = 0; l < kLanes; ++l) {
      ex[c][l] = exp_nonpositive(v[c][l] - top[l]);
      sum[l] += ex[c][l];
    }
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    lse[l] = top[l] + std::log(sum[l]);
    inv[l] = 1.0 / sum[l];
    s[l] = 0;
  }
  for (int64_t l = 0; l < count; ++l) {
    T* zr = z + (first + l) * cols;
    const T* t = y.row(first + l);
    for (int64_t c = 0; c < cols; ++c) {
      const double target = double(t[c]);
      s[l] += target * (lse[l] - v[c][l]);
      zr[c] = static_cast<T>(ex[c][l] * inv[l] - target);
    }
    out[first + l] = s[l];
  }
}

// "ce": z [rows, cols] (contiguous) becomes e = softmax(z) - y in place; returns the batch's loss
// sum(y * (logsumexp(z) - z)), the row's max subtracted and everything in double. Rows split over torch's
// threads from about 200 rows of 10 outputs (an exp, kLanes at a time, costs as much as a few other element
// operations; the row's log more); each row's loss is kept and they are added in row order, so the sum is
// the same whatever the threads. (A 200 x 10 batch: 14 us one row at a time, 8 us in lanes, one thread.)
template <typename T>
double softmax_error_(T* z, Rows<T> y, int64_t rows, int64_t cols, std::vector<double>& row_loss) {
  row_loss.resize(size_t(std::max<int64_t>(rows, 1)));
  double* out = row_loss.data();
  at::parallel_for(0, rows, std::max<int64_t>(1, kParallelGrain / 8 / std::max<int64_t>(cols, 1)),
                   [=](int64_t first, int64_t last) {
    if (cols <= kKeptExps) {  // kLanes rows at a time (the same numbers as the loop below)
      for (int64_t r = first; r < last; r += kLanes) softmax_lanes(z, y, r, std::min(kLanes, last - r), cols, out);
      return;
    }
    for (int64_t r = first; r < last; ++r) {
      T* zr = z + r * cols;
      const T* t = y.row(r);
      double top;  // each exp taken twice: the row is wider than the kept exps
      const double sum = row_exp_sum(zr, cols, static_cast<double*>(nullptr), top);
      const double lse = top + std::log(sum), inv_sum = 1.0 / sum;
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double target = double(t[c]), ex = exp_nonpositive(double(zr[c]) - top);
        s += target * (lse - double(zr[c]));
        zr[c] = static_cast<T>(ex * inv_sum - target);
      }
      out[r] = s;
    }
  });
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) total += out[r];
  return total;
}

// One validation block's figures, added into acc = [loss, right answers, squared error per output...]:
// z [rows, cols] the outputs (contiguous), y the targets, labels the classes (nullptr for values).
// The definitions are manualnn/training/metrics.py's Scorer.row: "sse" sum((z - y)^2), "ce"
// sum(y * (logsumexp(z) - z)); accuracy counts rows whose first largest output is the label.
template <typename T>
void score_block(const T* z, Rows<T> y, const int64_t* labels, int64_t rows, int64_t cols, bool cross_entropy,
                 double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * cols;
    const T* t = y.row(r);
    if (cross_entropy) {
      double top;
      const double lse_sum = row_exp_sum(zr, cols, static_cast<double*>(nullptr), top);
      const double lse = top + std::log(lse_sum);
      for (int64_t c = 0; c < cols; ++c) acc[0] += double(t[c]) * (lse - double(zr[c]));
    }
    if (!cross_entropy || !labels) {
      for (int64_t c = 0; c < cols; ++c) {
        const double d = double(zr[c]) - double(t[c]);
        if (!cross_entropy) acc[0] += d * d;
        if (!labels) acc[2 + c] += d * d;
      }
    }
    if (labels) {
      int64_t best = 0;  // torch.argmax: the first of equal maxima; a NaN counts as the largest
      for (int64_t c = 1; c < cols; ++c) {
        if (std::isnan(double(zr[best]))) break;
        if (zr[c] > zr[best] || std::isnan(double(zr[c]))) best = c;
      }
      acc[1] += best == labels[r] ? 1.0 : 0.0;
    }
  }
}

enum class OptimizerKind { kSgd, kMomentum, kAdam };

inline OptimizerKind optimizer_kind(const std::string& name) {
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
  T *p, *g, *m, *v;         // parameter, gradient, momentum buffer or exp_avg, exp_avg_sq
  int64_t n;                // elements
  int64_t decayed;          // elements [0, decayed) are weights (decayed); the bias row, if any, follows
  T decay, neg_lr, mu, coeff, b2, one_minus_b2, eps;
  bool small_weight;
  double step_size, corr2_sqrt;  // Adam's lr / (1 - beta1^t) and sqrt(1 - beta2^t), in double
};

// The optimizers' math on a layer, in one pass over its elements: the one definition here, element for
// element TorchOptimizer.apply's torch ops, whose CPU kernels round `a + alpha * b`, lerp and addcmul as
// fused multiply-adds (std::fma here). Weight decay (g += wd * p) reaches the weights only, never the
// bias row, and is written into the gradient as torch does. Adam:
//   m.lerp_(g, 1 - b1)          torch's lerp: from m when its weight is under 0.5, else from g
//   v = b2 * v + (1 - b2) * g * g
//   p -= step_size * m / (sqrt(v) * (1 / corr2_sqrt) + eps)
// The moments are torch's to the bit. The update is in the parameters' own precision with one division
// and the correctly rounded square root, where torch's applies its float64 factors in double (two
// float64 divisions per element: half of a 32-row step's time here) and its CPU sqrt (MKL's vsSqrt) is
// a unit in the last place off for about 0.6% of float32 values; so the parameters' last bits can differ
// from the torch backend's (both are judged against the float64 reference).
template <typename T>
MANUALNN_ALWAYS_INLINE void update_elements(const LayerUpdate<T>& u, int64_t first, int64_t last) {
  T* __restrict p = u.p + first;  // four separate buffers: the loops vectorise without checking for overlap
  T* __restrict g = u.g + first;
  T* __restrict m = u.m ? u.m + first : nullptr;
  T* __restrict v = u.v ? u.v + first : nullptr;
  const int64_t n = last - first, decayed = std::max<int64_t>(0, std::min(u.decayed, last) - first);
  for (int64_t k = 0; k < decayed; ++k) g[k] = std::fma(u.decay, p[k], g[k]);
  switch (u.kind) {
    case OptimizerKind::kSgd:
      for (int64_t k = 0; k < n; ++k) p[k] = std::fma(u.neg_lr, g[k], p[k]);
      break;
    case OptimizerKind::kMomentum:
      for (int64_t k = 0; k < n; ++k) {
        m[k] = T(m[k] * u.mu) + g[k];
        p[k] = std::fma(u.neg_lr, m[k], p[k]);
      }
      break;
    case OptimizerKind::kAdam: {
      const T inv_corr2_sqrt = T(1.0 / u.corr2_sqrt), step_size = T(u.step_size);
      for (int64_t k = 0; k < n; ++k) {
        const T mk = std::fma(u.coeff, T(g[k] - m[k]), u.small_weight ? m[k] : g[k]);
        const T vk = std::fma(T(u.one_minus_b2 * g[k]), g[k], T(v[k] * u.b2));
        m[k] = mk;
        v[k] = vk;
        p[k] = p[k] - step_size * (mk / (std::sqrt(vk) * inv_corr2_sqrt + u.eps));
      }
      break;
    }
  }
}

// The build targets this machine's CPU (-march=native, see manualnn/backends/native_build.py): std::fma is
// then one vectorised instruction.
template <typename T>
void update_layer(const LayerUpdate<T>& u) {
  at::parallel_for(0, u.n, kParallelGrain, [&](int64_t first, int64_t last) { update_elements(u, first, last); });
}

inline void check_like(const at::Tensor& t, const at::Tensor& like, const char* what, size_t i) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.sizes() == like.sizes() &&
                  t.is_contiguous(),
              what, "[", i, "]: expected a contiguous CPU tensor of dtype ", like.scalar_type(), " and shape ",
              like.sizes(), " (like params[", i, "]), got ", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

}  // namespace manualnn_native
