// The native CPU runner: whole chunks of training epochs of a bias-free ReLU MLP in one call.
//
// One epoch is the torch backend's step without Python in between:
//   forward   h_l = relu(h_{l-1} @ w_l)              at::mm_out into a preallocated h_l, then a fused clamp
//             diff = h_{L-1} @ w_L - y               one at::addmm_out with beta = -1
//             loss = sum(diff^2)                     a hand-written loop, accumulated in double
//   backward  g_{l-1} = mask(g_l @ w_l^T)            at::mm_out, then the fused mask ("relu" or "tutorial")
//             w_l -= 2 lr * h_{l-1}^T @ g_l          SGD folded into the weight-gradient GEMM (addmm_)
// grad_y = 2 * diff is never formed: the exact factor 2 sits in the update's alpha. Each g_{l-1} is
// computed from the old w_l before w_l is updated (the seed's order). Every buffer and every
// transposed view is made once, in the constructor: an epoch allocates nothing. Element-wise loops
// are plain loops the compiler vectorises (-O3), split across threads only for large buffers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <vector>

#include "elementwise.h"

namespace {

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

template <typename T>
void relu_inplace(T* h, int64_t n) {
  at::parallel_for(0, n, kParallelGrain, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) h[i] = manualnn::relu(h[i]);
  });
}

template <typename T>
void mask_inplace(T* g, const T* h, int64_t n, bool relu_mode) {
  at::parallel_for(0, n, kParallelGrain, [=](int64_t begin, int64_t end) {
    if (relu_mode) {
      for (int64_t i = begin; i < end; ++i) g[i] = manualnn::relu_mask(g[i], h[i]);
    } else {
      for (int64_t i = begin; i < end; ++i) g[i] = manualnn::tutorial_clamp(g[i]);
    }
  });
}

// Sum of squares in double, in a fixed order (deterministic); four partial sums let it pipeline.
template <typename T>
double sum_of_squares(const T* d, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) s[k] += double(d[i + k]) * double(d[i + k]);
  }
  for (; i < n; ++i) s[0] += double(d[i]) * double(d[i]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

class Runner {
 public:
  Runner(at::Tensor x, at::Tensor y, std::vector<at::Tensor> weights, double lr, bool relu_mode)
      : x_(x), y_(y), weights_(weights), alpha_(-2.0 * lr), relu_mode_(relu_mode) {
    TORCH_CHECK(!weights.empty(), "weights: expected at least one weight tensor");
    TORCH_CHECK(x.device().is_cpu(), "x: the native runner needs CPU tensors, got device ", x.device());
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "x: expected dtype float32 or float64, got ", x.scalar_type());
    const int64_t batch = x.size(0);
    auto options = x.options();
    inputs_.push_back(x);
    for (size_t l = 0; l + 1 < weights.size(); ++l) {
      acts_.push_back(at::empty({batch, weights[l].size(1)}, options));
      grad_hs_.push_back(at::empty({batch, weights[l].size(1)}, options));
      inputs_.push_back(acts_.back());
    }
    diff_ = at::empty({batch, weights.back().size(1)}, options);
    for (const at::Tensor& w : weights)  // a layer's three GEMMs have the same size: 2*B*in*out FLOPs
      single_thread_gemm_.push_back(2.0 * batch * w.size(0) * w.size(1) < kParallelGemmFlops);
    for (size_t l = 0; l < weights.size(); ++l) {
      inputs_t_.push_back(inputs_[l].t());   // views: they see the buffers' new contents
      weights_t_.push_back(weights[l].t());  // views: they see the in-place updates
    }
  }

  // Runs losses.numel() epochs; epoch i's loss (before its update) goes to losses' i-th element.
  // A 0-d tensor runs one epoch.
  void run(at::Tensor losses) {
    TORCH_CHECK(losses.device().is_cpu() && losses.scalar_type() == x_.scalar_type() && losses.dim() <= 1,
                "losses: expected a 0-d or 1-D CPU tensor of dtype ", x_.scalar_type(), ", got ",
                losses.dim(), "-D ", losses.scalar_type(), " on ", losses.device());
    // Below autograd: these tensors never require grad, and the dispatcher skips a layer per op.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const int64_t epochs = losses.numel();
    const int64_t stride = losses.dim() == 0 ? 1 : losses.stride(0);
    AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), "manualnn_native_run", [&] {
      scalar_t* out = losses.data_ptr<scalar_t>();
      for (int64_t e = 0; e < epochs; ++e) out[e * stride] = static_cast<scalar_t>(epoch<scalar_t>());
    });
  }

 private:
  template <typename T>
  double epoch() {
    const size_t n_layers = weights_.size();
    for (size_t l = 0; l + 1 < n_layers; ++l) {
      {
        SingleThreadScope threads(single_thread_gemm_[l]);
        at::mm_out(acts_[l], inputs_[l], weights_[l]);
      }
      relu_inplace(acts_[l].data_ptr<T>(), acts_[l].numel());
    }
    {
      SingleThreadScope threads(single_thread_gemm_.back());
      at::addmm_out(diff_, y_, inputs_.back(), weights_.back(), /*beta=*/-1, /*alpha=*/1);
    }
    const double loss = sum_of_squares(diff_.data_ptr<T>(), diff_.numel());

    at::Tensor* g = &diff_;
    for (size_t l = n_layers; l-- > 0;) {
      SingleThreadScope threads(single_thread_gemm_[l]);
      if (l > 0) {
        at::Tensor& g_prev = grad_hs_[l - 1];
        at::mm_out(g_prev, *g, weights_t_[l]);  // reads w_l before its update below
        mask_inplace(g_prev.data_ptr<T>(), acts_[l - 1].data_ptr<T>(), g_prev.numel(), relu_mode_);
      }
      weights_[l].addmm_(inputs_t_[l], *g, /*beta=*/1, /*alpha=*/alpha_);
      if (l > 0) g = &grad_hs_[l - 1];
    }
    return loss;
  }

  at::Tensor x_, y_, diff_;
  std::vector<at::Tensor> weights_, weights_t_, inputs_, inputs_t_, acts_, grad_hs_;
  double alpha_;
  std::vector<bool> single_thread_gemm_;  // per layer: its GEMMs are too small to split
  bool relu_mode_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "manualnn's native CPU runner: chunks of training epochs in one call";
  py::class_<Runner>(m, "Runner")
      .def(py::init<at::Tensor, at::Tensor, std::vector<at::Tensor>, double, bool>(), py::arg("x"),
           py::arg("y"), py::arg("weights"), py::arg("lr"), py::arg("relu_mode"))
      .def("run", &Runner::run, py::arg("losses"), py::call_guard<py::gil_scoped_release>(),
           "Run losses.numel() epochs, writing each epoch's loss (before its update) into losses.");
}
