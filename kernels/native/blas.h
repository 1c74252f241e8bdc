// Matrix products for the native runner: the BLAS that torch itself links (MKL, OpenBLAS), called
// directly. An at::mm_out costs a few microseconds of dispatch and checks before the BLAS call; at a
// 32-row batch that is most of a GEMM. The Fortran symbols are declared weak: where torch's library does
// not export them, the same products run through ATen (at::addmm_out), so the runner works on any build.
// Both paths make the call torch's own CPU matmul makes for row-major tensors, so the numbers are
// torch's (the seed's printed losses are the torch backend's, digit for digit).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cstdint>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
float sdot_(const int* n, const float* x, const int* incx, const float* y, const int* incy) __attribute__((weak));
double ddot_(const int* n, const double* x, const int* incx, const double* y, const int* incy) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));  // the C interface (the lower-case name is the Fortran one)
}

namespace manualnn_native {

// Sets up this thread's thread counts now, as its first parallel loop or count query would later: this
// library's copy of torch's lazy-init flag (an inline function's) and libtorch's. Each sets MKL's count for
// the thread to torch's, so a count set for the thread afterwards is not undone by them.
inline void set_up_thread_counts() {
  at::internal::lazy_init_num_threads();
  (void)at::get_num_threads();
}

// BLAS on the calling thread alone while this lives, when `active` (MKL's thread-local count; another BLAS:
// nothing to do, an OpenMP BLAS's calls from a parallel region's thread run on that thread). The thread's
// counts are set up first (set_up_thread_counts): at::parallel_for does it on a thread's first call from
// this library, and inside a block that would undo the count set here for the rest of the block.
class OneBlasThread {
 public:
  explicit OneBlasThread(bool active = true)
      : active_(active && holds()), saved_(active_ ? one_thread() : 0) {}
  ~OneBlasThread() {
    if (active_) MKL_Set_Num_Threads_Local(saved_);
  }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

  // Whether this BLAS can be held to one thread (it is MKL).
  static bool holds() { return MKL_Set_Num_Threads_Local != nullptr; }

 private:
  static int one_thread() {
    set_up_thread_counts();
    return MKL_Set_Num_Threads_Local(1);
  }

  bool active_;
  int saved_;
};

inline bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// A row-major view [rows, cols] with row stride ld, as an ATen tensor (for the fallback path only).
template <typename T>
at::Tensor view(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, at::CPU(c10::CppTypeToScalarType<T>::value));
}

// Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C, where op(A) is [m, k] (A stored [m, k], or [k, m] when
// trans_a) and op(B) is [k, n] (B stored [k, n], or [n, k] when trans_b); lda, ldb, ldc are row strides.
// Column-major BLAS computes the transpose: C^T = op(B)^T @ op(A)^T.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  // BLAS wants each leading dimension at least the stored matrix's row length, even for one row
  lda = std::max<int64_t>(lda, trans_a ? m : k);
  ldb = std::max<int64_t>(ldb, trans_b ? k : n);
  ldc = std::max<int64_t>(ldc, n);
  lda = std::max<int64_t>(lda, 1);
  ldb = std::max<int64_t>(ldb, 1);
  constexpr bool is_float = std::is_same<T, float>::value;
  const bool blas = (is_float ? sgemm_ != nullptr : dgemm_ != nullptr) && fits_int(m) && fits_int(n) &&
                    fits_int(k) && fits_int(lda) && fits_int(ldb) && fits_int(ldc);
  if (blas && k > 0) {
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int mi = int(n), ni = int(m), ki = int(k), la = int(ldb), lb = int(lda), lc = int(ldc);
    if constexpr (is_float) {
      sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
    } else {
      dgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
    }
    return;
  }
  at::Tensor av = trans_a ? view(a, k, m, lda).t() : view(a, m, k, lda);
  at::Tensor bv = trans_b ? view(b, n, k, ldb).t() : view(b, k, n, ldb);
  at::Tensor cv = view(c, m, n, ldc);
  at::addmm_out(cv, cv, av, bv, beta, alpha);
}

// sum(x * y) over n contiguous elements: BLAS's dot (what torch.dot runs), else ATen's.
template <typename T>
T dot(int64_t n, const T* x, const T* y) {
  constexpr bool is_float = std::is_same<T, float>::value;
  if ((is_float ? sdot_ != nullptr : ddot_ != nullptr) && fits_int(n) && n > 0) {
    const int ni = int(n), one = 1;
    if constexpr (is_float) {
      return sdot_(&ni, x, &one, y, &one);
    } else {
      return ddot_(&ni, x, &one, y, &one);
    }
  }
  return at::dot(view(x, 1, n, n).view({n}), view(y, 1, n, n).view({n})).template item<T>();
}

}  // namespace manualnn_native
