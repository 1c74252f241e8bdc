// How many threads each step's GEMMs use: manualnn/training/threads.py's ThreadPolicy, the same rule in
// C++ so that the native runner decides inside its epoch loop (the reasons and the constants are
// explained there; tests/test_threads.py feeds both the same step times and requires the same choices).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace manualnn_native {

class ThreadChooser {
 public:
  static constexpr int kSamples = 3, kWindow = 16, kProbe = 3;
  static constexpr int64_t kGapLeast = 8;
  static constexpr double kCost = 0.01, kProbeEvery = 10.0, kClearLoser = 3.0, kMargin = 0.05, kHold = 0.03,
                          kPause = 0.01;

  ThreadChooser(int most, bool adapt) : most_(std::max(most, 1)), adapt_(adapt && most > 1), best_(most_) {}

  int most() const { return most_; }
  int best() const { return best_; }
  bool adapt() const { return adapt_; }
  bool decided() const { return decided_; }

  // The thread count for the next step.
  int next() {
    if (!adapt_) return most_;
    if (!decided_) return int(samples_[1].size()) < kSamples ? 1 : most_;  // one thread first, then all
    if (probe_left_ > 0) {
      --probe_left_;
      return other();
    }
    if (countdown_ <= 0) {
      probe_left_ = kProbe - 1;
      countdown_ = gap();
      samples_[slot(other())].clear();  // judged on fresh steps: the load may have changed
      return other();
    }
    --countdown_;
    return best_;
  }

  // Steps resume after `idle` seconds of other work: after more than kPause, the next step is not compared.
  void resume(double idle) {
    if (idle > kPause) last_ = 0;
  }

  // A step's thread count and its time in seconds; comparable: a step whose time compares with the others'.
  void record(int n, double seconds, bool comparable) {
    const bool settling = n != last_;  // the first step, or the first after a change of count or a pause
    last_ = n;
    if (!adapt_ || !comparable) return;
    if (settling && !skipped_) {  // not timed, unless the one before was not either (every step after a pause)
      skipped_ = true;
      return;
    }
    skipped_ = false;
    std::vector<double>& window = samples_[slot(n)];
    window.push_back(seconds);
    if (int(window.size()) > kWindow) window.erase(window.begin());
    const size_t many = samples_[0].size(), one = samples_[1].size();
    if (!decided_) {
      if (std::min(many, one) >= size_t(kSamples) || (std::min(many, one) >= 1 && clear_loser())) {
        decided_ = true;
        choose(fastest(kMargin));
      }
      return;
    }
    if (many && one) {  // all threads, once chosen, are kept while they are kMargin - kHold faster
      const int faster = fastest(best_ == most_ ? kMargin - kHold : kMargin);
      if (faster != best_) choose(faster);
    }
  }

 private:
  int slot(int n) const { return n == most_ ? 0 : 1; }
  int other() const { return best_ == most_ ? 1 : most_; }

  double mean(int n) const {
    const std::vector<double>& w = samples_[slot(n)];
    double sum = 0;
    for (double v : w) sum += v;
    return sum / double(w.size());
  }

  int fastest(double margin) const { return mean(most_) < (1.0 - margin) * mean(1) ? most_ : 1; }

  int64_t gap() {
    const double best = mean(best_);
    if (best <= 0) return kGapLeast;
    // none of the other's: a probe timed no step
    const double extra = samples_[slot(other())].empty() ? 0.0 : (mean(other()) - best) / best;
    const double steps = std::max({double(kGapLeast), std::ceil(kProbe * extra / kCost), 2.0 * double(last_gap_)});
    last_gap_ = int64_t(std::min(steps, std::ceil(kProbeEvery / best)));
    return last_gap_;
  }

  bool clear_loser() const {
    const double a = mean(most_), b = mean(1);
    return a >= kClearLoser * b || b >= kClearLoser * a;
  }

  void choose(int best) {
    best_ = best;
    last_gap_ = 0;
    countdown_ = gap();
    probe_left_ = 0;
  }

  int most_;
  bool adapt_;
  int best_;
  bool decided_ = false;
  std::vector<double> samples_[2];  // [0]: `most` threads, [1]: one thread
  int64_t countdown_ = 0, probe_left_ = 0, last_gap_ = 0;
  int last_ = 0;          // the previous step's count (0: no step yet, or a pause since)
  bool skipped_ = false;  // the last comparable step was not timed (it followed a change or a pause)
};

}  // namespace manualnn_native
