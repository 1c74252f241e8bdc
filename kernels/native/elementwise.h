// The element-wise pieces of a training step, shared by the CPU runner (runner.cpp) and a future
// CUDA variant (elementwise.cu): plain inline functions on one element, callable from host and device.
#pragma once

#if defined(__CUDACC__)
#define MANUALNN_HOST_DEVICE __host__ __device__
#else
#define MANUALNN_HOST_DEVICE
#endif

namespace manualnn {

// clamp(min=0) as torch does it: NaN stays NaN (NaN < 0 is false).
template <typename T>
MANUALNN_HOST_DEVICE inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// The correct ReLU backward: the gradient where the forward pre-activation was positive, else 0.
// h is the activation after the clamp, so h > 0 exactly where h_pre > 0; the test is written as
// !(h <= 0) so that a NaN activation lets its gradient through, as grad_h[h_pre <= 0] = 0 does.
template <typename T>
MANUALNN_HOST_DEVICE inline T relu_mask(T grad, T h) {
  return h <= T(0) ? T(0) : grad;
}

// The seed tutorial's backward: grad_h.clamp_(min=0) clamps the gradient's own values.
template <typename T>
MANUALNN_HOST_DEVICE inline T tutorial_clamp(T grad) {
  return grad < T(0) ? T(0) : grad;
}

}  // namespace manualnn
