// The native CPU step: the torch backend's training step (manualnn/backends/torch_backend.py) in C++,
// and whole chunks of full-batch epochs in one call, with no Python between the ops.
//
// A network's layer i computes [h, 1] @ p_i (the bias as p_i's last row, see manualnn/spec.py):
//   forward   h_l = relu(a_l @ p_l)                   at::mm_out into the [:, :n] view of a [h_l, 1] buffer
//             e = z - y ("sse"), softmax(z) - y ("ce") one GEMM, then one pass over the rows
//             loss = the batch's sum                   accumulated in double (see output_error_and_loss)
//   backward  grad_h = mask(g_i @ w_i^T)               reads w_i (rows [:in], no bias row) before its update
//             grad_i = scale * a_i^T @ g_i             then the optimizer on layer i (apply_update), or
//             p_i.addmm_(a_i^T, g_i, beta, -lr*scale)  plain SGD folded into the gradient's GEMM
// The loss's constant (2 for "sse") and the mean's 1/rows are in ``scale``, never in e. The ReLU
// backward (relu_backward_) and the optimizers' math (update_elements) are written once each.
//
// Every buffer and view is made in the constructor or given by Python (activations, gradients,
// optimizer state): a step allocates nothing. The optimizer state (momentum buffers, Adam's moments,
// its step count and beta powers) is Python's tensors, updated in place, so checkpoints see it.
// Element-wise loops are plain loops the compiler vectorises (-O3), split across threads only for
// large buffers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "step_math.h"

namespace {

using namespace manualnn_native;

class Step {
 public:
  Step(at::Tensor x, at::Tensor y, std::vector<at::Tensor> params, std::vector<at::Tensor> acts,
       std::vector<at::Tensor> grads, std::vector<at::Tensor> momentum_buffers, std::vector<at::Tensor> exp_avgs,
       std::vector<at::Tensor> exp_avg_sqs, at::Tensor step_count, at::Tensor powers, bool bias, bool relu_mode,
       bool cross_entropy, double scale, bool fold, const std::string& optimizer, double lr, double weight_decay,
       double momentum, double beta1, double beta2, double eps)
      : x_(x), y_(y), params_(params), acts_(acts), grads_(grads), momentum_(momentum_buffers), exp_avg_(exp_avgs),
        exp_avg_sq_(exp_avg_sqs), step_count_(step_count), powers_(powers), bias_(bias), relu_mode_(relu_mode),
        cross_entropy_(cross_entropy), fold_(fold), kind_(optimizer_kind(optimizer)), scale_(scale), lr_(lr),
        weight_decay_(weight_decay), momentum_factor_(momentum), beta1_(beta1), beta2_(beta2), eps_(eps) {
    const size_t n_layers = params.size();
    TORCH_CHECK(n_layers > 0, "params: expected at least one layer");
    TORCH_CHECK(x.device().is_cpu(), "x: the native backend needs CPU tensors, got device ", x.device());
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "x: expected dtype float32 or float64, got ", x.scalar_type());
    TORCH_CHECK(x.dim() == 2 && x.size(1) == params[0].size(0), "x: expected [rows, ", params[0].size(0),
                "], got ", x.sizes());
    const int64_t batch = x.size(0);
    const int64_t out = params.back().size(1);
    TORCH_CHECK(y.device().is_cpu() && y.scalar_type() == x.scalar_type() && y.dim() == 2 && y.size(0) == batch &&
                    y.size(1) == out,
                "y: expected a CPU tensor of dtype ", x.scalar_type(), " and shape [", batch, ", ", out, "], got ",
                y.scalar_type(), " ", y.sizes(), " on ", y.device());
    TORCH_CHECK(acts.size() + 1 == n_layers, "acts: expected ", n_layers - 1, " activation buffers, got ",
                acts.size());
    for (size_t i = 0; i < n_layers; ++i) {
      const at::Tensor& p = params[i];
      TORCH_CHECK(p.device().is_cpu() && p.scalar_type() == x.scalar_type() && p.dim() == 2 && p.is_contiguous(),
                  "params[", i, "]: expected a contiguous 2-D CPU tensor of dtype ", x.scalar_type(), ", got ",
                  p.scalar_type(), " ", p.sizes(), " on ", p.device());
      if (i > 0) {
        const at::Tensor& a = acts[i - 1];
        const int64_t width = params[i - 1].size(1);
        TORCH_CHECK(p.size(0) == width + (bias ? 1 : 0), "params[", i, "]: expected ", width + (bias ? 1 : 0),
                    " rows (layer ", i - 1, "'s outputs", bias ? " and the bias row" : "", "), got ", p.size(0));
        TORCH_CHECK(a.scalar_type() == x.scalar_type() && a.dim() == 2 && a.size(0) == batch &&
                        a.size(1) == p.size(0) && a.stride(1) == 1,
                    "acts[", i - 1, "]: expected [", batch, ", ", p.size(0), "] of dtype ", x.scalar_type(),
                    " with unit column stride, got ", a.scalar_type(), " ", a.sizes());
      }
      if (!grads.empty()) check_like(grads.at(i), p, "grads", i);
    }
    TORCH_CHECK(grads.empty() || grads.size() == n_layers, "grads: expected ", n_layers, " tensors, got ",
                grads.size());
    TORCH_CHECK(fold || !grads.empty(), "grads: needed unless plain SGD is folded into the GEMMs");
    if (kind_ == OptimizerKind::kMomentum) {
      TORCH_CHECK(momentum_buffers.size() == n_layers, "momentum_buffers: expected ", n_layers, " tensors");
      for (size_t i = 0; i < n_layers; ++i) check_like(momentum_buffers[i], params[i], "momentum_buffers", i);
    }
    if (kind_ == OptimizerKind::kAdam) {
      TORCH_CHECK(exp_avgs.size() == n_layers && exp_avg_sqs.size() == n_layers, "exp_avgs, exp_avg_sqs: expected ",
                  n_layers, " tensors each");
      for (size_t i = 0; i < n_layers; ++i) {
        check_like(exp_avgs[i], params[i], "exp_avgs", i);
        check_like(exp_avg_sqs[i], params[i], "exp_avg_sqs", i);
        denoms_.push_back(at::empty_like(params[i]));  // sqrt(v), made once
      }
    }
    TORCH_CHECK(step_count.device().is_cpu() && step_count.scalar_type() == at::kLong && step_count.dim() == 0,
                "step_count: expected a 0-d int64 CPU tensor, got ", step_count.scalar_type(), " ",
                step_count.sizes());
    TORCH_CHECK(powers.device().is_cpu() && powers.scalar_type() == at::kDouble && powers.numel() == 2 &&
                    powers.is_contiguous(),
                "powers: expected a contiguous float64 CPU tensor of 2 elements, got ", powers.scalar_type(), " ",
                powers.sizes());

    auto options = x.options();
    inputs_.push_back(x);
    for (size_t l = 0; l + 1 < n_layers; ++l) {
      const int64_t width = params[l].size(1);
      hs_.push_back(acts[l].narrow(1, 0, width));  // h_l: the [:, :n] view, its ones column left alone
      grad_hs_.push_back(at::empty({batch, width}, options));
      inputs_.push_back(acts[l]);
    }
    error_ = at::empty({batch, out}, options);
    row_losses_.assign(static_cast<size_t>(batch), 0.0);
    for (size_t l = 0; l < n_layers; ++l) {
      // a layer's three GEMMs have the same size: 2 * rows * in * out FLOPs each
      single_thread_gemm_.push_back(2.0 * batch * params[l].size(0) * params[l].size(1) < kParallelGemmFlops);
      inputs_t_.push_back(inputs_[l].t());  // views: they see the buffers' new contents
      if (l > 0) weights_t_.push_back(params[l].narrow(0, 0, params[l - 1].size(1)).t());  // w_l^T, no bias row
      else weights_t_.push_back(at::Tensor());  // layer 0's input gradient is never needed
    }
  }

  // Forward, loss into the 0-d loss_out, backward and the optimizer's update.
  void step(at::Tensor loss_out) {
    check_loss_tensor(loss_out, "loss_out", 0);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), "manualnn_native_step", [&] {
      *loss_out.data_ptr<scalar_t>() = static_cast<scalar_t>(train_step<scalar_t>(/*update=*/true));
    });
  }

  // Forward, loss into loss_out, every layer's gradient into grads; no update.
  void gradients(at::Tensor loss_out) {
    check_loss_tensor(loss_out, "loss_out", 0);
    TORCH_CHECK(!grads_.empty(), "gradients: this step was made without grads (make it with grads=)");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), "manualnn_native_gradients", [&] {
      *loss_out.data_ptr<scalar_t>() = static_cast<scalar_t>(train_step<scalar_t>(/*update=*/false));
    });
  }

  // The optimizer's update from grads (after gradients() and, say, an all-reduce).
  void update() {
    TORCH_CHECK(!grads_.empty(), "update: this step was made without grads (make it with grads=)");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), "manualnn_native_update", [&] {
      begin_update();
      for (size_t i = 0; i < params_.size(); ++i) apply_update<scalar_t>(i);
    });
  }

  // losses.numel() steps on this batch (full-batch epochs); step e's loss into the e-th element of the
  // 1-D (any stride) or 0-d losses.
  void run_epochs(at::Tensor losses) {
    check_loss_tensor(losses, "losses", 1);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const int64_t epochs = losses.numel();
    const int64_t stride = losses.dim() == 0 ? 1 : losses.stride(0);
    AT_DISPATCH_FLOATING_TYPES(x_.scalar_type(), "manualnn_native_run_epochs", [&] {
      scalar_t* out = losses.data_ptr<scalar_t>();
      for (int64_t e = 0; e < epochs; ++e) out[e * stride] = static_cast<scalar_t>(train_step<scalar_t>(true));
    });
  }

 private:
  void check_loss_tensor(const at::Tensor& t, const char* name, int64_t max_dim) const {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == x_.scalar_type() && t.dim() <= max_dim, name,
                ": expected a ", max_dim == 0 ? "0-d" : "0-d or 1-D", " CPU tensor of dtype ", x_.scalar_type(),
                ", got ", t.dim(), "-D ", t.scalar_type(), " on ", t.device());
  }

  // One step; returns the batch's loss (before the update). update=false: gradients into grads_ only.
  template <typename T>
  double train_step(bool update) {
    const size_t n_layers = params_.size();
    for (size_t l = 0; l + 1 < n_layers; ++l) {
      {
        SingleThreadScope threads(single_thread_gemm_[l]);
        at::mm_out(hs_[l], inputs_[l], params_[l]);
      }
      relu_<T>(hs_[l]);
    }
    {
      SingleThreadScope threads(single_thread_gemm_.back());
      if (cross_entropy_) {
        at::mm_out(error_, inputs_.back(), params_.back());  // z, made e below
      } else {
        at::addmm_out(error_, y_, inputs_.back(), params_.back(), /*beta=*/-1, /*alpha=*/1);  // e = z - y
      }
    }
    const double loss = output_error_and_loss<T>();

    if (update && !fold_) begin_update();
    const at::Tensor* g = &error_;
    for (size_t i = n_layers; i-- > 0;) {
      SingleThreadScope threads(single_thread_gemm_[i]);
      if (i > 0) {
        at::mm_out(grad_hs_[i - 1], *g, weights_t_[i]);  // reads w_i before its update below
        relu_backward_<T>(grad_hs_[i - 1], hs_[i - 1], relu_mode_);
      }
      if (update && fold_) {  // plain SGD (with decay only when there is no bias row to spare from it)
        params_[i].addmm_(inputs_t_[i], *g, /*beta=*/1.0 - lr_ * weight_decay_, /*alpha=*/-lr_ * scale_);
      } else {
        if (scale_ == 1.0) {
          at::mm_out(grads_[i], inputs_t_[i], *g);
        } else {
          at::addmm_out(grads_[i], grads_[i], inputs_t_[i], *g, /*beta=*/0, /*alpha=*/scale_);
        }
        if (update) apply_update<T>(i);
      }
      if (i > 0) g = &grad_hs_[i - 1];
    }
    return loss;
  }

  // The output error in place (error_ holds z - y for "sse", z for "ce") and the batch's loss.
  // The loss is accumulated in double (per row, then over the rows in order: deterministic whatever
  // the thread count), so in float32 it can differ from the torch backend's float32 sum in the last
  // digit: that is why backend "auto" never picks this one (manualnn/backends/__init__.py, resolve).
  // "ce": softmax(z) - y with the row's max subtracted, loss = sum(y * (logsumexp(z) - z)), in double.
  template <typename T>
  double output_error_and_loss() {
    T* e = error_.data_ptr<T>();
    const T* y = y_.data_ptr<T>();
    const int64_t cols = error_.size(1), ld_y = y_.stride(0), y_col = y_.stride(1);
    double* row_loss = row_losses_.data();
    if (cross_entropy_) {
      for_rows(error_.size(0), cols, [=](int64_t r) {
        T* z = e + r * cols;
        const T* t = y + r * ld_y;
        double top = -INFINITY;
        for (int64_t c = 0; c < cols; ++c) top = std::max(top, double(z[c]));
        double sum = 0;
        for (int64_t c = 0; c < cols; ++c) sum += std::exp(double(z[c]) - top);
        const double lse = top + std::log(sum);
        double s = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double target = double(t[c * y_col]);
          s += target * (lse - double(z[c]));
          z[c] = static_cast<T>(std::exp(double(z[c]) - lse) - target);
        }
        row_loss[r] = s;
      });
    } else {
      for_rows(error_.size(0), cols, [=](int64_t r) {
        const T* d = e + r * cols;
        double s = 0;
        for (int64_t c = 0; c < cols; ++c) s += double(d[c]) * double(d[c]);
        row_loss[r] = s;
      });
    }
    double total = 0;
    for (double v : row_losses_) total += v;
    return total;
  }

  // Once per update, before any layer's apply_update: Adam's step count and bias corrections, on the
  // parameters' own state tensors (as TorchOptimizer.begin does on the device).
  void begin_update() {
    if (kind_ != OptimizerKind::kAdam) return;
    *step_count_.data_ptr<int64_t>() += 1;
    double* pw = powers_.data_ptr<double>();
    pw[0] *= beta1_;
    pw[1] *= beta2_;
    step_size_ = lr_ / (1.0 - pw[0]);
    corr2_sqrt_ = std::sqrt(1.0 - pw[1]);
  }

  // The optimizer's update of layer i from grads_[i], in place (the math: update_elements).
  template <typename T>
  void apply_update(size_t i) {
    LayerUpdate<T> u;
    u.kind = kind_;
    u.p = params_[i].data_ptr<T>();
    u.g = grads_[i].data_ptr<T>();
    u.m = kind_ == OptimizerKind::kMomentum ? momentum_[i].data_ptr<T>()
          : kind_ == OptimizerKind::kAdam   ? exp_avg_[i].data_ptr<T>()
                                            : nullptr;
    u.v = kind_ == OptimizerKind::kAdam ? exp_avg_sq_[i].data_ptr<T>() : nullptr;
    u.root = kind_ == OptimizerKind::kAdam ? denoms_[i].data_ptr<T>() : nullptr;
    const int64_t n = params_[i].numel();
    u.decayed = weight_decay_ == 0.0 ? 0 : bias_ ? n - params_[i].size(1) : n;  // the elements before the bias row
    u.decay = T(weight_decay_);
    u.neg_lr = T(-lr_);
    u.mu = T(momentum_factor_);
    const T weight = T(1.0 - beta1_);  // lerp's weight
    u.small_weight = std::abs(weight) < T(0.5);
    u.coeff = u.small_weight ? weight : T(weight - T(1));
    u.b2 = T(beta2_);
    u.one_minus_b2 = T(1.0 - beta2_);
    u.eps = T(eps_);
    u.step_size = step_size_;
    u.corr2_sqrt = corr2_sqrt_;
    for_elements(n, [&](int64_t begin, int64_t end) { update_range(u, /*adam_step=*/false, begin, end); });
    if (kind_ != OptimizerKind::kAdam) return;
    at::sqrt_out(denoms_[i], exp_avg_sq_[i]);  // torch.sqrt's own kernel (MKL's, on torch's usual build)
    for_elements(n, [&](int64_t begin, int64_t end) { update_range(u, /*adam_step=*/true, begin, end); });
  }

  at::Tensor x_, y_, error_;
  std::vector<at::Tensor> params_, acts_, grads_, momentum_, exp_avg_, exp_avg_sq_, denoms_;
  at::Tensor step_count_, powers_;
  std::vector<at::Tensor> inputs_, inputs_t_, weights_t_, hs_, grad_hs_;
  std::vector<double> row_losses_;
  std::vector<bool> single_thread_gemm_;  // per layer: its GEMMs are too small to split
  bool bias_, relu_mode_, cross_entropy_, fold_;
  OptimizerKind kind_;
  double scale_, lr_, weight_decay_, momentum_factor_, beta1_, beta2_, eps_;
  double step_size_ = 0, corr2_sqrt_ = 1;  // Adam's, set by begin_update
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "manualnn's native CPU step (see manualnn/backends/native_backend.py)";
  py::class_<Step>(m, "Step")
      .def(py::init<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                    std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor,
                    bool, bool, bool, double, bool, const std::string&, double, double, double, double, double,
                    double>(),
           py::arg("x"), py::arg("y"), py::arg("params"), py::arg("acts"), py::arg("grads"),
           py::arg("momentum_buffers"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("step_count"),
           py::arg("powers"), py::arg("bias"), py::arg("relu_mode"), py::arg("cross_entropy"), py::arg("scale"),
           py::arg("fold"), py::arg("optimizer"), py::arg("lr"), py::arg("weight_decay"), py::arg("momentum"),
           py::arg("beta1"), py::arg("beta2"), py::arg("eps"))
      .def("step", &Step::step, py::arg("loss_out"), py::call_guard<py::gil_scoped_release>(),
           "Forward, loss (the batch's sum) into the 0-d loss_out, backward and update.")
      .def("gradients", &Step::gradients, py::arg("loss_out"), py::call_guard<py::gil_scoped_release>(),
           "Forward, loss into loss_out, every layer's gradient into grads; no update.")
      .def("update", &Step::update, py::call_guard<py::gil_scoped_release>(),
           "The optimizer's update from grads.")
      .def("run_epochs", &Step::run_epochs, py::arg("losses"), py::call_guard<py::gil_scoped_release>(),
           "losses.numel() steps on this batch, step e's loss (before its update) into losses[e].");
}
