// The start of a CUDA variant of the native runner: the step's element-wise kernels on the device,
// written with the same per-element functions as the CPU loops (elementwise.h). Nothing calls these
// yet; tests/test_native.py compiles this file for sm_90 wherever nvcc exists, so it cannot rot.
#include <cstdint>

#include "elementwise.h"

namespace manualnn {

template <typename T>
__global__ void relu_inplace_kernel(T* h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    h[i] = relu(h[i]);
}

// RELU_MODE: mask by the forward activation (the correct backward); else the seed's clamp of the values.
template <typename T, bool RELU_MODE>
__global__ void mask_inplace_kernel(T* g, const T* h, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    g[i] = RELU_MODE ? relu_mask(g[i], h[i]) : tutorial_clamp(g[i]);
}

// One partial sum of squares per block (summed afterwards in a fixed order: no float atomics).
template <typename T, int BLOCK>
__global__ void sum_of_squares_kernel(const T* d, int64_t n, double* partials) {
  __shared__ double acc[BLOCK];
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(BLOCK) + threadIdx.x; i < n; i += int64_t(gridDim.x) * BLOCK)
    s += double(d[i]) * double(d[i]);
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int stride = BLOCK / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) acc[threadIdx.x] += acc[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = acc[0];
}

// The instantiations a runner would launch: both dtypes, both gradient modes.
template __global__ void relu_inplace_kernel<float>(float*, int64_t);
template __global__ void relu_inplace_kernel<double>(double*, int64_t);
template __global__ void mask_inplace_kernel<float, true>(float*, const float*, int64_t);
template __global__ void mask_inplace_kernel<float, false>(float*, const float*, int64_t);
template __global__ void mask_inplace_kernel<double, true>(double*, const double*, int64_t);
template __global__ void mask_inplace_kernel<double, false>(double*, const double*, int64_t);
template __global__ void sum_of_squares_kernel<float, 256>(const float*, int64_t, double*);
template __global__ void sum_of_squares_kernel<double, 256>(const double*, int64_t, double*);

}  // namespace manualnn
