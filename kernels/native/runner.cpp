// The native CPU runner: the torch backend's training step (manualnn/backends/torch_backend.py) in C++,
// and whole epochs in one call: the shuffled order, each batch's rows, every step, the epoch's loss, the
// validation pass and early stopping, with no Python in between.
//
// A network's layer i computes [h, 1] @ p_i (the bias as p_i's last row, see manualnn/spec.py):
//   forward   h_l = relu(a_l @ p_l)                   a GEMM into the [:, :n] part of a [h_l, 1] buffer
//             e = z - y ("sse"), softmax(z) - y ("ce") one GEMM, then one pass over the rows
//             loss = the batch's sum                   BLAS's dot for "sse" (torch.dot's), double for "ce"
//             g = scale * e                            the loss's constant (2 for "sse"), the mean's 1/rows
//   backward  grad_h = mask(g_i @ w_i^T)               reads w_i (rows [:in], no bias row) before its update
//             grad_i = a_i^T @ g_i                     then the optimizer on layer i (apply_update), or
//             p_i = decay * p_i - lr * a_i^T @ g_i     plain SGD folded into the gradient's GEMM
// The scale goes into the output error, not into the GEMMs' alpha: BLAS applies an alpha that is not a
// power of two in one place with one thread and in another with several (other rounding), and a run's
// numbers must not depend on its threads (manualnn/training/threads.py). The GEMMs are the ones torch's
// matmul calls (blas.h), so a step's numbers are the torch backend's; a batch of 96 rows or more is
// stepped in blocks of rows (network.h's blocks()), whose losses and gradients are summed over the blocks,
// so its numbers are the torch backend's to those sums' rounding.
//
// Every buffer is made in the constructor or given by Python (parameters, optimizer state, the early-
// stopping snapshot): a step allocates nothing. The optimizer state (momentum buffers, Adam's moments, its
// step count and beta powers) is Python's tensors, updated in place, so checkpoints see it. Threads: each
// step's GEMMs and large element-wise loops run on as many of torch's threads as ThreadChooser picks for
// it by timing the steps (threads.h, the twin of manualnn/training/threads.py).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "network.h"
#include "step_math.h"
#include "threads.h"

namespace {

using namespace manualnn_native;

constexpr int64_t kScoreBlock = 1024;  // validation rows scored per forward pass (threads.py's SCORE_BLOCK)

void check_rows(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.dim() == 2 && t.size(1) == cols &&
                  (t.stride(1) == 1 || t.size(1) <= 1) && t.stride(0) >= cols,
              name, ": expected a CPU tensor of dtype ", dtype, " with ", cols,
              " columns and rows of unit column stride, got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

// One training step on a fixed batch (the step protocol of manualnn/backends/__init__.py).
class Step {
 public:
  Step(at::Tensor x, at::Tensor y, Tensors params, Tensors grads, Tensors momentum_buffers, Tensors exp_avgs,
       Tensors exp_avg_sqs, at::Tensor step_count, at::Tensor powers, bool bias, bool fold,
       std::vector<int64_t> decayed_rows, const std::string& grad, const std::string& loss,
       const std::string& reduction, const std::string& optimizer, double rows, double lr, double weight_decay,
       double momentum, double beta1, double beta2, double eps)
      : x_(x), y_(y),
        net_(params, grads, momentum_buffers, exp_avgs, exp_avg_sqs, step_count, powers,
             make_settings(bias, fold, decayed_rows, grad, loss, reduction, optimizer, lr, weight_decay, momentum,
                           beta1, beta2, eps),
             x.size(0)) {
    check_rows(x, "x", net_.dtype(), net_.inputs());
    check_rows(y, "y", net_.dtype(), net_.outputs());
    TORCH_CHECK(y.size(0) == x.size(0), "y: expected ", x.size(0), " rows (like x), got ", y.size(0));
    scale_ = net_.settings().scale(rows);  // (a rank with none of a small batch's rows: zero gradients)
  }

  void step(at::Tensor loss_out) { run(loss_out, true); }

  void gradients(at::Tensor loss_out) {
    TORCH_CHECK(net_.has_grads(), "gradients: this step was made without grads (make it with grads=)");
    run(loss_out, false);
  }

  void update() {
    TORCH_CHECK(net_.has_grads(), "update: this step was made without grads (make it with grads=)");
    FlushSubnormals flush(at::get_num_threads());
    AT_DISPATCH_FLOATING_TYPES(net_.dtype(), "manualnn_native_update", [&] { net_.update_from_grads<scalar_t>(); });
  }

 private:
  void run(at::Tensor loss_out, bool update) {
    TORCH_CHECK(loss_out.device().is_cpu() && loss_out.scalar_type() == net_.dtype() && loss_out.dim() == 0,
                "loss_out: expected a 0-d CPU tensor of dtype ", net_.dtype(), ", got ", loss_out.dim(), "-D ",
                loss_out.scalar_type(), " on ", loss_out.device());
    FlushSubnormals flush(at::get_num_threads());
    AT_DISPATCH_FLOATING_TYPES(net_.dtype(), "manualnn_native_step", [&] {
      const scalar_t* x = x_.data_ptr<scalar_t>();
      const int64_t rows = x_.size(0);
      Rows<scalar_t> y{y_.data_ptr<scalar_t>(), y_.stride(0)};
      const double loss = rows ? net_.forward_loss<scalar_t>(x, x_.stride(0), y, rows) : 0.0;
      net_.backward<scalar_t>(x, x_.stride(0), rows, scale_, update);
      *loss_out.data_ptr<scalar_t>() = static_cast<scalar_t>(loss);
    });
  }

  at::Tensor x_, y_;
  Network net_;
  double scale_ = 1;
};

// The rows of the largest of an epoch's batches: the fewest batches of at most batch_size rows, as even as
// the rows allow (manualnn/training/batches.py's batch_sizes; 225 rows by 200: 113 and 112). batch_size < 1
// is refused in Epochs' body.
inline int64_t even_batch(int64_t n, int64_t batch_size) {
  if (n < 1 || batch_size < 1) return std::max<int64_t>(std::min(batch_size, n), 1);
  const int64_t count = (n + std::min(batch_size, n) - 1) / std::min(batch_size, n);
  return (n + count - 1) / count;
}

// Whole epochs over the training rows: each epoch's order (a seeded permutation, or the rows in order),
// its batches gathered and stepped, the epoch's loss, the validation rows' figures and early stopping.
class Epochs {
 public:
  Epochs(at::Tensor x, at::Tensor y, Tensors params, Tensors momentum_buffers, Tensors exp_avgs,
         Tensors exp_avg_sqs, at::Tensor step_count, at::Tensor powers, bool bias, bool fold,
         std::vector<int64_t> decayed_rows, const std::string& grad, const std::string& loss,
         const std::string& reduction, const std::string& optimizer, double lr, double weight_decay,
         double momentum, double beta1, double beta2, double eps, int64_t batch_size,
         bool shuffle, at::Tensor val_x, at::Tensor val_y, at::Tensor val_labels, int64_t patience, at::Tensor best,
         Tensors state, Tensors snapshot, int most_threads, bool adapt_threads)
      : x_(x), y_(y),
        net_(params, {}, momentum_buffers, exp_avgs, exp_avg_sqs, step_count, powers,
             make_settings(bias, fold, decayed_rows, grad, loss, reduction, optimizer, lr, weight_decay, momentum,
                           beta1, beta2, eps),
             even_batch(x.size(0), batch_size)),
        batch_(even_batch(x.size(0), batch_size)), shuffle_(shuffle), val_x_(val_x), val_y_(val_y),
        val_labels_(val_labels), patience_(patience), best_(best), state_(state), snapshot_(snapshot),
        threads_(most_threads, adapt_threads) {
    const at::ScalarType dtype = net_.dtype();
    check_rows(x, "x", dtype, net_.inputs());
    check_rows(y, "y", dtype, net_.outputs());
    TORCH_CHECK(x.size(0) > 0 && y.size(0) == x.size(0), "y: expected ", x.size(0), " rows (like x), got ",
                y.size(0));
    TORCH_CHECK(batch_size > 0, "batch_size: expected a positive integer, got ", batch_size);
    const int64_t n = x.size(0);
    batches_ = (n + batch_ - 1) / batch_;  // batch_ is the largest even batch: the count is batch_size's
    if (batches_ > 1) {
      gathered_ = make_rows(batch_, net_.inputs(), false, x.options());
      order_ = at::arange(n, at::kLong);
    }
    if (val_x.numel() > 0) {
      check_rows(val_x, "val_x", dtype, net_.inputs());
      check_rows(val_y, "val_y", dtype, net_.outputs());
      TORCH_CHECK(val_y.size(0) == val_x.size(0), "val_y: expected ", val_x.size(0), " rows, got ", val_y.size(0));
      has_labels_ = val_labels.numel() > 0;  // none: the targets are values (RMSE and R^2 instead of accuracy)
      TORCH_CHECK(!has_labels_ || (val_labels.scalar_type() == at::kLong && val_labels.is_contiguous() &&
                                   val_labels.numel() == val_x.size(0)),
                  "val_labels: expected a contiguous int64 tensor of ", val_x.size(0), " labels, or none");
      net_.make_score_buffers(std::min<int64_t>(val_x.size(0), kScoreBlock), score_acts_, score_z_);
    }
    TORCH_CHECK(best.scalar_type() == at::kDouble && best.numel() == 2 && best.is_contiguous(),
                "best: expected a contiguous float64 tensor [epoch, loss]");
    TORCH_CHECK(snapshot.size() == state.size(), "snapshot: expected ", state.size(), " tensors, got ",
                snapshot.size());
    for (size_t i = 0; i < state.size(); ++i) {
      TORCH_CHECK(state[i].is_contiguous() && snapshot[i].is_contiguous() &&
                      state[i].scalar_type() == snapshot[i].scalar_type() && state[i].sizes() == snapshot[i].sizes(),
                  "snapshot[", i, "]: expected a contiguous tensor like state[", i, "]");
    }
  }

  // The floats one epoch writes: its loss, then the validation figures (see metrics.Scorer.row).
  int64_t row_width() const { return 1 + (scored() ? 2 + (has_labels_ ? 0 : net_.outputs()) : 0); }

  const ThreadChooser& threads() const { return threads_; }

  // Epochs first_epoch, first_epoch + 1, ... (rows.size(0) of them): epoch i's row into rows[i]. seeds[i]:
  // the generator seed of epoch i's order (ignored without shuffling or with one batch). Stops after an
  // epoch whose loss is not finite, or when early stopping ends the run (the best epoch's state restored).
  // Returns (epochs run, stopped early).
  std::tuple<int64_t, bool> run(int64_t first_epoch, at::Tensor seeds, at::Tensor rows) {
    const int64_t epochs = rows.size(0);
    TORCH_CHECK(rows.dim() == 2 && rows.is_contiguous() && rows.scalar_type() == net_.dtype() &&
                    rows.size(1) >= row_width(),
                "rows: expected a contiguous [epochs, ", row_width(), "] tensor of dtype ", net_.dtype());
    TORCH_CHECK(seeds.scalar_type() == at::kLong && seeds.is_contiguous() && seeds.numel() >= epochs,
                "seeds: expected ", epochs, " int64 seeds");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    FlushSubnormals flush;  // this thread; the others as steps first use them
    ThreadCount thread_count;
    // the caller's work since the last chunk (the first step of a run follows the constructor's)
    threads_.resume(std::chrono::duration<double>(std::chrono::steady_clock::now() - last_step_end_).count());
    int64_t done = 0;
    bool stopped = false;
    AT_DISPATCH_FLOATING_TYPES(net_.dtype(), "manualnn_native_epochs", [&] {
      for (int64_t i = 0; i < epochs && !stopped; ++i) {
        scalar_t* row = rows.data_ptr<scalar_t>() + i * rows.size(1);
        row[0] = static_cast<scalar_t>(train_epoch<scalar_t>(seeds.data_ptr<int64_t>()[i], thread_count, flush));
        done = i + 1;
        if (scored()) {
          thread_count.set(threads_.best());
          flush.cover(threads_.best());
          score<scalar_t>(row + 1);
        }
        if (!std::isfinite(double(row[0]))) break;  // Python rewinds to the last finite epoch
        stopped = scored() && patience_ > 0 && watch<scalar_t>(first_epoch + i, row[1]);
      }
    });
    return {done, stopped};
  }

 private:
  // at::set_num_threads only when the count changes; the caller's count back at the end.
  struct ThreadCount {
    int saved = at::get_num_threads(), now = saved;
    void set(int n) {
      if (n > 0 && n != now) at::set_num_threads(now = n);
    }
    ~ThreadCount() { set(saved); }
  };

  bool scored() const { return val_x_.numel() > 0; }

  template <typename T>
  double train_epoch(int64_t seed, ThreadCount& thread_count, FlushSubnormals& flush) {
    const int64_t n = x_.size(0), ldx = x_.stride(0);
    const T* x_all = x_.data_ptr<T>();
    const int64_t* index = nullptr;
    if (batches_ > 1 && shuffle_) {  // torch.randperm with a generator seeded so: the same order as Python draws
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
      at::randperm_out(order_, n, generator);
      index = order_.data_ptr<int64_t>();
    }
    const Settings& s = net_.settings();
    const int64_t base = n / batches_, extra = n % batches_;  // the first `extra` batches take a row more
    double total = 0;
    for (int64_t b = 0; b < batches_; ++b) {
      const int threads = threads_.next();
      thread_count.set(threads);
      flush.cover(threads);
      const auto started = std::chrono::steady_clock::now();
      const int64_t first = b * base + std::min(b, extra), rows = base + (b < extra ? 1 : 0);
      const T* x = x_all + first * ldx;
      int64_t ld = ldx;
      if (index) {  // this batch's rows, gathered
        T* g = gathered_.data_ptr<T>();
        ld = gathered_.stride(0);
        const int64_t cols = net_.inputs();
        for (int64_t r = 0; r < rows; ++r) std::memcpy(g + r * ld, x_all + index[first + r] * ldx, sizeof(T) * cols);
        x = g;
      }
      Rows<T> y{y_.data_ptr<T>(), y_.stride(0), index, first};
      total += net_.forward_loss<T>(x, ld, y, rows);
      net_.backward<T>(x, ld, rows, s.scale(double(rows)), /*update=*/true);
      last_step_end_ = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(last_step_end_ - started).count();
      threads_.record(threads, seconds, /*comparable=*/true);  // even batches: a row apart at most
    }
    return total;
  }

  // The validation rows' figures [loss, right answers, squared error per output...] into out.
  template <typename T>
  void score(T* out) {
    const int64_t n = val_x_.size(0), width = row_width() - 1, cols = net_.outputs();
    std::vector<double> acc(size_t(width), 0.0);
    const int64_t* labels = has_labels_ ? val_labels_.data_ptr<int64_t>() : nullptr;
    for (int64_t first = 0; first < n; first += kScoreBlock) {
      const int64_t rows = std::min(kScoreBlock, n - first);
      const T* z = net_.outputs<T>(val_x_.data_ptr<T>() + first * val_x_.stride(0), val_x_.stride(0), rows,
                                   score_acts_, score_z_);
      Rows<T> y{val_y_.data_ptr<T>(), val_y_.stride(0), nullptr, first};
      score_block(z, y, labels ? labels + first : nullptr, rows, cols, net_.settings().cross_entropy, acc.data());
    }
    for (int64_t j = 0; j < width; ++j) out[j] = static_cast<T>(acc[size_t(j)]);
  }

  // Early stopping after an epoch (manualnn/training/stopping.py's Stopper.after_epoch, the same rule on
  // the same numbers): keep the best validation loss's state; after `patience` epochs without a better
  // one, restore it and stop. The loss compared is the one the history records: the row's value, divided
  // by the validation rows for "mean".
  template <typename T>
  bool watch(int64_t epoch, T row_loss) {
    double loss = double(row_loss);
    if (net_.settings().mean) loss /= double(val_x_.size(0));
    double* best = best_.data_ptr<double>();  // [epoch (-1: none yet), loss]
    if (best[0] < 0 || loss < best[1]) {
      best[0] = double(epoch);
      best[1] = loss;
      copy_state(state_, snapshot_);
      return false;
    }
    if (double(epoch) - best[0] >= double(patience_)) {
      copy_state(snapshot_, state_);
      return true;
    }
    return false;
  }

  static void copy_state(const Tensors& from, const Tensors& to) {
    for (size_t i = 0; i < from.size(); ++i) std::memcpy(to[i].data_ptr(), from[i].data_ptr(), from[i].nbytes());
  }

  at::Tensor x_, y_;
  Network net_;
  int64_t batch_, batches_ = 1;
  bool shuffle_, has_labels_ = false;
  at::Tensor gathered_, order_, val_x_, val_y_, val_labels_;
  Tensors score_acts_;
  at::Tensor score_z_;
  int64_t patience_;
  at::Tensor best_;
  Tensors state_, snapshot_;
  ThreadChooser threads_;
  std::chrono::steady_clock::time_point last_step_end_ = std::chrono::steady_clock::now();
};

// The L2 search's fits in one call (manualnn/training/selection.py). Fit (s, f) trains a copy of `params`
// (the starting parameters, in the runners' layout) for `epochs` full-batch steps on xs[f], ys[f] with
// weight decay strengths[s] / (xs[f]'s rows), fresh optimizer state, then is scored by its loss summed over
// held_xs[f], held_ys[f] (metrics.Scorer.row's definition, as the validation pass computes it). A fit is
// the Epochs runner's one-batch epoch on one thread, step for step: train(..., threads=1) on the native
// backend ends with the same parameters. The fits are independent, so they run side by side on up to
// `threads` OpenMP threads, one fit per thread at a time, every product and loop of a fit on its own thread
// (torch's and BLAS's thread count is one meanwhile), each thread making the next fit's network when it
// finishes one (so `threads` networks are alive at a time, not all of them): a thread that another process
// slows down takes fewer. A Ctrl-C (a Python signal handler that raises) ends the search after the calling
// thread's fit. Returns the losses [strength][fold] in one list; +inf for a fit whose training loss stopped
// being finite.
class FoldFit {
 public:
  FoldFit(at::Tensor x, at::Tensor y, at::Tensor held_x, at::Tensor held_y, const Tensors& start,
          const Settings& settings)
      : x_(x), y_(y), held_x_(held_x), held_y_(held_y),
        net_(clones(start), {}, fresh(start, settings.kind == OptimizerKind::kMomentum),
             fresh(start, settings.kind == OptimizerKind::kAdam), fresh(start, settings.kind == OptimizerKind::kAdam),
             at::zeros({}, at::kLong), at::ones({2}, at::kDouble), settings, x.size(0)) {
    const at::ScalarType dtype = net_.dtype();
    check_rows(x, "xs[i]", dtype, net_.inputs());
    check_rows(y, "ys[i]", dtype, net_.outputs());
    check_rows(held_x, "held_xs[i]", dtype, net_.inputs());
    check_rows(held_y, "held_ys[i]", dtype, net_.outputs());
    TORCH_CHECK(x.size(0) > 0 && y.size(0) == x.size(0) && held_x.size(0) > 0 && held_y.size(0) == held_x.size(0),
                "a fold: expected rows to train on and rows held out, each with as many targets, got ", x.size(0),
                ", ", y.size(0), ", ", held_x.size(0), " and ", held_y.size(0));
    net_.make_score_buffers(held_x.size(0), score_acts_, score_z_);
  }

  template <typename T>
  double run(int64_t epochs) {
    const int64_t rows = x_.size(0), ldx = x_.stride(0);
    const T* x = x_.data_ptr<T>();
    const Rows<T> y{y_.data_ptr<T>(), y_.stride(0)};
    const double scale = net_.settings().scale(double(rows));
    for (int64_t e = 0; e < epochs; ++e) {
      const double loss = net_.forward_loss<T>(x, ldx, y, rows);
      if (!std::isfinite(double(static_cast<T>(loss)))) return INFINITY;  // as the epoch's row would hold it
      net_.backward<T>(x, ldx, rows, scale, /*update=*/true);
    }
    const int64_t held = held_x_.size(0), cols = net_.outputs();
    const T* z = net_.outputs<T>(held_x_.data_ptr<T>(), held_x_.stride(0), held, score_acts_, score_z_);
    std::vector<double> acc(size_t(2 + cols), 0.0);
    score_block(z, Rows<T>{held_y_.data_ptr<T>(), held_y_.stride(0)}, nullptr, held, cols,
                net_.settings().cross_entropy, acc.data());
    return acc[0];
  }

  at::ScalarType dtype() const { return net_.dtype(); }

 private:
  static Tensors clones(const Tensors& start) {
    Tensors out;
    for (const auto& t : start) out.push_back(t.clone(at::MemoryFormat::Contiguous));
    return out;
  }
  static Tensors fresh(const Tensors& start, bool wanted) {
    Tensors out;
    if (wanted) {
      for (const auto& t : start) out.push_back(at::zeros_like(t, at::MemoryFormat::Contiguous));
    }
    return out;
  }

  at::Tensor x_, y_, held_x_, held_y_;
  Network net_;
  Tensors score_acts_;
  at::Tensor score_z_;
};

// torch's and BLAS's thread count one on this thread while it lives, `after` then. fold_losses gives the
// caller one around the whole team and each other team thread its own: MKL keeps a count per thread, which
// torch sets on each of its OpenMP threads the first time that thread asks for torch's count (every
// at::parallel_for does): to torch's count at that moment. A team thread first used while the count was two
// keeps two, and there (this OpenMP allows nested teams) MKL splits a product over two threads of its own,
// summing in another order: in the test suite's long-lived workers a fold fit on that thread came out up to
// 8e-8 (relative) from train(threads=1)'s (tests/test_selection.py makes that state and fails without this).
struct CountOfOne {
  int after;
  explicit CountOfOne(int after) : after(after) {
    set_up_thread_counts();  // now, not later from a count another thread changed meanwhile
    at::set_num_threads(1);
  }
  ~CountOfOne() { at::set_num_threads(after); }
  CountOfOne(const CountOfOne&) = delete;
  CountOfOne& operator=(const CountOfOne&) = delete;
};

// For tests: OpenMP's other threads in `team` set up by torch now, with torch's count as it is (torch sets a
// thread up the first time the thread asks for the count, as at::parallel_for does), as a long-lived process
// can leave them (see CountOfOne).
void set_up_team(int team) {
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
  {
    if (omp_get_thread_num() != 0) at::get_num_threads();
  }
#endif
}

// For tests: step_math.h's outer_relu_backward_ alone, on g [rows, 1] (any row stride), w [cols] and h
// [rows, cols] (unit column stride), against its twin torch.mm(g, w[None]) and the ReLU mask.
at::Tensor outer_relu_backward(at::Tensor g, at::Tensor w, at::Tensor h, bool relu_mode) {
  TORCH_CHECK(g.is_cpu() && w.is_cpu() && h.is_cpu() && g.dim() == 2 && g.size(1) == 1 && w.dim() == 1 &&
                  w.is_contiguous() && h.dim() == 2 &&
                  h.stride(1) == 1 && h.size(0) == g.size(0) && h.size(1) == w.size(0) &&
                  g.scalar_type() == w.scalar_type() && h.scalar_type() == w.scalar_type(),
              "outer_relu_backward: expected g [rows, 1], w [cols] and h [rows, cols] of one dtype");
  at::Tensor out = at::empty({h.size(0), h.size(1)}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "outer_relu_backward", [&] {
    outer_relu_backward_(out.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), g.stride(0), w.data_ptr<scalar_t>(),
                         h.data_ptr<scalar_t>(), h.size(0), h.size(1), h.stride(0), relu_mode);
  });
  return out;
}

std::vector<double> fold_losses(std::vector<at::Tensor> xs, std::vector<at::Tensor> ys,
                                std::vector<at::Tensor> held_xs, std::vector<at::Tensor> held_ys, Tensors params,
                                std::vector<double> strengths, int64_t epochs, int threads, bool bias, bool fold,
                                std::vector<int64_t> decayed_rows, const std::string& grad, const std::string& loss,
                                const std::string& reduction, const std::string& optimizer, double lr,
                                double momentum, double beta1, double beta2, double eps) {
  const size_t folds = xs.size();
  TORCH_CHECK(folds > 0 && ys.size() == folds && held_xs.size() == folds && held_ys.size() == folds,
              "xs, ys, held_xs, held_ys: expected one tensor per fold in each, got ", xs.size(), ", ", ys.size(),
              ", ", held_xs.size(), " and ", held_ys.size());
  TORCH_CHECK(!strengths.empty() && epochs > 0, "strengths, epochs: expected at least one of each, got ",
              strengths.size(), " and ", epochs);
  const int64_t count = int64_t(strengths.size() * folds);
  std::vector<double> out(size_t(count), 0.0);
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr failure;
  std::mutex failure_lock;
  const std::thread::id caller = std::this_thread::get_id();
  // torch's and BLAS's own threads set to one meanwhile, as a train(..., threads=1) call sets them: then a
  // team of one runs every product on one thread, and inside a team BLAS never reads a thread count that
  // another call left behind (its results could then differ from call to call). The caller's count after.
  // (Set even where torch's count is one already: BLAS keeps a count of its own.)
  const CountOfOne caller_count(at::get_num_threads());
  const auto work = [&] {
    FlushHere flush;
    std::optional<CountOfOne> own_count;  // each other team thread's own (see CountOfOne)
    if (std::this_thread::get_id() != caller) own_count.emplace(caller_count.after);
    try {
      for (int64_t k = next++; k < count && !stop; k = next++) {
        const size_t f = size_t(k) % folds;  // fit k: strength k / folds on fold k % folds, made when taken (a
        const double decay = strengths[size_t(k) / folds] / double(std::max<int64_t>(xs[f].size(0), 1));
        FoldFit fit(xs[f], ys[f], held_xs[f], held_ys[f], params,  // network per thread alive at a time)
                    make_settings(bias, fold, decayed_rows, grad, loss, reduction, optimizer, lr, decay, momentum,
                                  beta1, beta2, eps));
        AT_DISPATCH_FLOATING_TYPES(fit.dtype(), "manualnn_native_fold_losses",
                                   [&] { out[size_t(k)] = fit.run<scalar_t>(epochs); });
        if (std::this_thread::get_id() == caller) {  // a Ctrl-C ends the search after this fit, as between the
          py::gil_scoped_acquire gil;                // train() calls of the search on the other backends
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
      }
    } catch (...) {  // nothing may leave a parallel region: kept, and raised after it
      stop = true;
      std::lock_guard<std::mutex> hold(failure_lock);
      if (!failure) failure = std::current_exception();
    }
  };
  const int team = int(std::max<int64_t>(1, std::min<int64_t>(threads, count)));
#ifdef _OPENMP
  if (team > 1) {
#pragma omp parallel num_threads(team)
    work();
  } else {
    work();
  }
#else
  work();
#endif
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace

// csv.cpp
py::object parse_csv(py::bytes bytes, int64_t body, const std::string& delimiter, int64_t width,
                     const std::vector<int64_t>& numbers, int threads, int64_t piece);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "manualnn's native CPU runner (see manualnn/backends/native_backend.py)";
  m.attr("SCORE_BLOCK") = kScoreBlock;
  m.def("one_blas_thread", &one_blas_thread, py::arg("rows"), py::arg("params"), py::arg("fold"),
        "Whether a step or validation pass of `rows` rows of a network of `params` parameters (`fold`: plain "
        "SGD folded into its GEMM) runs every BLAS call on one thread whatever torch's count (network.h).");
  py::class_<Step>(m, "Step")
      .def(py::init<at::Tensor, at::Tensor, Tensors, Tensors, Tensors, Tensors, Tensors, at::Tensor, at::Tensor, bool,
                    bool, std::vector<int64_t>, const std::string&, const std::string&, const std::string&,
                    const std::string&, double, double, double, double, double, double, double>(),
           py::arg("x"), py::arg("y"), py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
           py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("step_count"), py::arg("powers"), py::arg("bias"),
           py::arg("fold"), py::arg("decayed_rows"), py::arg("grad"), py::arg("loss"), py::arg("reduction"),
           py::arg("optimizer"), py::arg("rows"),
           py::arg("lr"), py::arg("weight_decay"), py::arg("momentum"), py::arg("beta1"), py::arg("beta2"),
           py::arg("eps"))
      .def("step", &Step::step, py::arg("loss_out"), py::call_guard<py::gil_scoped_release>(),
           "Forward, loss (the batch's sum) into the 0-d loss_out, backward and update.")
      .def("gradients", &Step::gradients, py::arg("loss_out"), py::call_guard<py::gil_scoped_release>(),
           "Forward, loss into loss_out, every layer's gradient into grads; no update.")
      .def("update", &Step::update, py::call_guard<py::gil_scoped_release>(), "The optimizer's update from grads.");
  py::class_<Epochs>(m, "Epochs")
      .def(py::init<at::Tensor, at::Tensor, Tensors, Tensors, Tensors, Tensors, at::Tensor, at::Tensor, bool, bool,
                    std::vector<int64_t>, const std::string&, const std::string&, const std::string&,
                    const std::string&, double, double, double, double, double, double, int64_t, bool, at::Tensor,
                    at::Tensor, at::Tensor, int64_t, at::Tensor, Tensors, Tensors, int, bool>(),
           py::arg("x"), py::arg("y"), py::arg("params"), py::arg("momentum_buffers"), py::arg("exp_avgs"),
           py::arg("exp_avg_sqs"), py::arg("step_count"), py::arg("powers"), py::arg("bias"), py::arg("fold"),
           py::arg("decayed_rows"), py::arg("grad"),
           py::arg("loss"), py::arg("reduction"), py::arg("optimizer"), py::arg("lr"), py::arg("weight_decay"),
           py::arg("momentum"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("batch_size"),
           py::arg("shuffle"), py::arg("val_x"), py::arg("val_y"), py::arg("val_labels"), py::arg("patience"),
           py::arg("best"), py::arg("state"), py::arg("snapshot"), py::arg("most_threads"), py::arg("adapt_threads"))
      .def_property_readonly("row_width", &Epochs::row_width)
      .def_property_readonly("best_threads", [](const Epochs& e) { return e.threads().best(); })
      .def("run", &Epochs::run, py::arg("first_epoch"), py::arg("seeds"), py::arg("rows"),
           py::call_guard<py::gil_scoped_release>(), "Whole epochs in one call; returns (epochs run, stopped early).");
  m.def("fold_losses", &fold_losses, py::arg("xs"), py::arg("ys"), py::arg("held_xs"), py::arg("held_ys"),
        py::arg("params"), py::arg("strengths"), py::arg("epochs"), py::arg("threads"), py::arg("bias"),
        py::arg("fold"), py::arg("decayed_rows"), py::arg("grad"), py::arg("loss"), py::arg("reduction"),
        py::arg("optimizer"), py::arg("lr"), py::arg("momentum"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::call_guard<py::gil_scoped_release>(),
        "The L2 search's fits, side by side: each (strength, fold)'s loss on its held-out rows.");
  m.def("set_up_team", &set_up_team, py::arg("team"), "For tests: see CountOfOne in runner.cpp.");
  m.def("outer_relu_backward", &outer_relu_backward, py::arg("g"), py::arg("w"), py::arg("h"), py::arg("relu_mode"),
        "For tests: the fused one-output grad_h of step_math.h.");
  m.def("parse_csv", &parse_csv, py::arg("data"), py::arg("body"), py::arg("delimiter"), py::arg("width"),
        py::arg("numbers"), py::arg("threads"), py::arg("piece") = 0,
        "A clean CSV's number columns as float64 [rows, len(numbers)], or None (csv.cpp says which files).");
  py::class_<ThreadChooser>(m, "ThreadChooser", "threads.h's rule, for tests against its Python twin")
      .def(py::init<int, bool>(), py::arg("most"), py::arg("adapt"))
      .def("next", &ThreadChooser::next)
      .def("record", &ThreadChooser::record, py::arg("n"), py::arg("seconds"), py::arg("comparable"))
      .def("resume", &ThreadChooser::resume, py::arg("idle"))
      .def_property_readonly("best", &ThreadChooser::best)
      .def_property_readonly("decided", &ThreadChooser::decided);
}
