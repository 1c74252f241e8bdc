// Can a second thread make a step faster when another process holds one of the machine's two cores?
// A stand-in for the native runner's blocked step (kernels/native/network.h: a batch in blocks of rows,
// each block's products on one thread, then a short serial part): BLOCKS blocks of plain loops of about
// 50 us each, then about 14 us alone (on one core of this project's 2-core machine: 214 us a step, near
// the digits step's 260 us). Each way of sharing the blocks between two threads is timed for STEPS steps:
//   0  one thread does every block
//   1  two threads, fixed halves: the helper takes the second half, the caller waits for it (a barrier,
//      as an OpenMP parallel loop does)
//   2  two threads, blocks claimed: each thread takes the next untaken block; the caller waits only for
//      blocks the helper took (a helper descheduled while idle holds nothing up)
//   3  as 2, and the helper yields its core while it waits for the next step
//   4  as 2, and the helper sleeps (a futex) until the next step
// Usage: busy_share MODE STEPS [BLOCKS]; prints the microseconds per step. benchmarks/busy_share.py builds
// it and runs every mode idle and beside busy processes.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <sched.h>

namespace {

const int kRows = 3, kIn = 64, kOut = 512;   // one block: kRows rows of a 64 -> 512 product and its transpose
int blocks = 4, mode = 0;
std::vector<float> x, w;
std::vector<std::vector<float>> y;

void block(int b) {
  float* out = y[b].data();
  for (int i = 0; i < kRows; i++) {
    float* row = out + i * kOut;
    std::memset(row, 0, kOut * sizeof(float));
    for (int k = 0; k < kIn; k++) {
      const float a = x[(b * kRows + i) * kIn + k], *wk = w.data() + k * kOut;
      for (int j = 0; j < kOut; j++) row[j] += a * wk[j];
    }
    for (int k = 0; k < kIn; k++) {   // and back, so that the next step depends on this one
      const float* wk = w.data() + k * kOut;
      float s = 0;
      for (int j = 0; j < kOut; j++) s += row[j] * wk[j];
      x[(b * kRows + i) * kIn + k] = 1e-3f * s + 0.5f;
    }
  }
}

void serial() {
  volatile float s = 0;
  for (int i = 0; i < 6000; i++) s = s + i;
}

std::atomic<int> step{-1}, next{0}, done{0};
std::atomic<bool> stop{false};

void claim_blocks() {
  for (int b; (b = next.fetch_add(1)) < blocks;) {
    block(b);
    done.fetch_add(1);
  }
}

void helper() {
  for (int seen = -1; !stop.load();) {
    const int s = step.load(std::memory_order_acquire);
    if (s == seen) {
      if (mode == 3) sched_yield();
      if (mode == 4) step.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = s;
    if (mode == 1) {
      for (int b = blocks / 2; b < blocks; b++) block(b);
      done.fetch_add(blocks - blocks / 2);
    } else {
      claim_blocks();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: busy_share MODE(0-4) STEPS [BLOCKS]\n");
    return 2;
  }
  mode = std::atoi(argv[1]);
  const int steps = std::atoi(argv[2]);
  if (argc > 3) blocks = std::atoi(argv[3]);
  if (mode < 0 || mode > 4 || steps < 1 || blocks < 0) {
    std::fprintf(stderr, "busy_share: expected MODE 0-4, STEPS >= 1 and BLOCKS >= 0\n");
    return 2;
  }
  x.assign(blocks * kRows * kIn, 0.5f);
  w.assign(kIn * kOut, 0.01f);
  y.assign(blocks, std::vector<float>(kRows * kOut));
  std::thread team;
  if (mode) team = std::thread(helper);
  const auto started = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; s++) {
    if (mode == 0) {
      for (int b = 0; b < blocks; b++) block(b);
    } else {
      done = 0;
      next = mode == 1 ? blocks : 0;   // fixed halves: nothing to claim
      step.store(s, std::memory_order_release);
      if (mode == 4) step.notify_one();
      if (mode == 1) {
        for (int b = 0; b < blocks / 2; b++) block(b);
        done.fetch_add(blocks / 2);
      } else {
        claim_blocks();
      }
      while (done.load() < blocks) {
      }
    }
    serial();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  stop = true;
  step.store(-2);
  step.notify_one();
  if (mode) team.join();
  std::printf("%.1f\n", seconds / steps * 1e6);
  return 0;
}
