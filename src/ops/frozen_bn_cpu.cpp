// A frozen BatchNorm with what follows it in a ResNet block (the ReLU, or the shortcut's addition
// and the ReLU) as one pass, for MindSpore ops.Custom(func_type="aot") on CPU: float32, (N, C, ...)
// maps, OpenMP over the (n, c) planes.
//
//   FrozenBnForward         x, gamma, beta, mean, var, eps            -> y = x s + t
//   FrozenBnReluForward     x, gamma, beta, mean, var, eps            -> y = max(x s + t, 0)
//   FrozenBnAddReluForward  x, gamma, beta, mean, var, eps, shortcut  -> y = max(x s + t + shortcut, 0)
//     per channel s = gamma / sqrt(var + eps), t = beta - mean s (detectron2's FrozenBatchNorm2d)
//   FrozenBnBackward        dy, gamma, var, eps                       -> dx = dy s
//   FrozenBnReluBackward    y, dy, gamma, var, eps                    -> dx = [y > 0] dy s
//   FrozenBnAddReluBackward y, dy, gamma, var, eps                    -> dx = [y > 0] dy s, dshortcut = [y > 0] dy
//
// Why: in MindSpore's CPU graph each of BatchNorm, the addition and the ReLU is a pass over the
// map, and the ResNet runs them on every block's output (R50 at 800x1333: 53 BatchNorms, 49
// ReLUs, 16 additions per image). The statistics are constants, so the normalization is a
// per-channel multiply-add and the three passes become one read of each input and one write.
// The backward needs only the output (the ReLU's mask) and the channel scale.
#include <cmath>
#include <cstdint>

#include "cpu_float32.h"

namespace {

enum class Tail { kNone, kRelu, kAddRelu };

// (planes, plane size, channels) of a (N, C, ...) map; false unless it has at least two axes.
bool plane_layout(int ndim, const int64_t *shape, int64_t *planes, int64_t *plane, int64_t *channels) {
  if (ndim < 2) return false;
  *channels = shape[1];
  *planes = shape[0] * shape[1];
  *plane = element_count(ndim - 2, shape + 2);
  return true;
}

inline float channel_scale(const float *gamma, const float *var, float eps, int64_t c) {
  return gamma[c] * (1.0f / std::sqrt(var[c] + eps));
}

template <Tail tail>
int forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int inputs = tail == Tail::kAddRelu ? 7 : 6;
  if (nparam != inputs + 1) return 1;
  for (int i = 0; i < nparam; ++i)
    if (!is_float32(dtypes[i])) return 1;
  int64_t planes, plane, channels;
  if (!plane_layout(ndims[0], shapes[0], &planes, &plane, &channels)) return 2;
  for (int i = 1; i < 5; ++i)
    if (ndims[i] != 1 || shapes[i][0] != channels) return 2;
  if (tail == Tail::kAddRelu && !same_shape(ndims[0], shapes[0], ndims[6], shapes[6])) return 2;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float *mean = static_cast<const float *>(params[3]);
  const float *var = static_cast<const float *>(params[4]);
  const float eps = *static_cast<const float *>(params[5]);
  const float *shortcut = tail == Tail::kAddRelu ? static_cast<const float *>(params[6]) : nullptr;
  float *y = static_cast<float *>(params[inputs]);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t c = p % channels;
    const float s = channel_scale(gamma, var, eps, c);
    const float t = beta[c] - mean[c] * s;
    const float *__restrict xp = x + p * plane;
    float *__restrict yp = y + p * plane;
    if (tail == Tail::kNone) {
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) yp[i] = xp[i] * s + t;
    } else if (tail == Tail::kRelu) {
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) yp[i] = std::max(xp[i] * s + t, 0.0f);
    } else {
      const float *__restrict rp = shortcut + p * plane;
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) yp[i] = std::max(xp[i] * s + t + rp[i], 0.0f);
    }
  }
  return 0;
}

template <Tail tail>
int backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  // inputs: [y,] dy, gamma, var, eps; outputs: dx [, dshortcut]
  const int first = tail == Tail::kNone ? 0 : 1;  // index of dy
  const int outputs = tail == Tail::kAddRelu ? 2 : 1;
  if (nparam != first + 4 + outputs) return 1;
  for (int i = 0; i < nparam; ++i)
    if (!is_float32(dtypes[i])) return 1;
  int64_t planes, plane, channels;
  if (!plane_layout(ndims[first], shapes[first], &planes, &plane, &channels)) return 2;
  if (first == 1 && !same_shape(ndims[0], shapes[0], ndims[1], shapes[1])) return 2;
  for (int i = first + 1; i < first + 3; ++i)
    if (ndims[i] != 1 || shapes[i][0] != channels) return 2;
  const float *y = first == 1 ? static_cast<const float *>(params[0]) : nullptr;
  const float *dy = static_cast<const float *>(params[first]);
  const float *gamma = static_cast<const float *>(params[first + 1]);
  const float *var = static_cast<const float *>(params[first + 2]);
  const float eps = *static_cast<const float *>(params[first + 3]);
  float *dx = static_cast<float *>(params[first + 4]);
  float *dshortcut = tail == Tail::kAddRelu ? static_cast<float *>(params[first + 5]) : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float s = channel_scale(gamma, var, eps, p % channels);
    const float *__restrict dyp = dy + p * plane;
    float *__restrict dxp = dx + p * plane;
    if (tail == Tail::kNone) {
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) dxp[i] = dyp[i] * s;
    } else {
      const float *__restrict yp = y + p * plane;
      if (tail == Tail::kRelu) {
#pragma omp simd
        for (int64_t i = 0; i < plane; ++i) dxp[i] = yp[i] > 0.0f ? dyp[i] * s : 0.0f;
      } else {
        float *__restrict dsp = dshortcut + p * plane;
#pragma omp simd
        for (int64_t i = 0; i < plane; ++i) {
          const float g = yp[i] > 0.0f ? dyp[i] : 0.0f;
          dsp[i] = g;
          dxp[i] = g * s;
        }
      }
    }
  }
  return 0;
}

}  // namespace

#define FROZEN_BN_ENTRY(name, body)                                                                            \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, \
                      void *extra) {                                                                           \
    (void)stream;                                                                                              \
    (void)extra;                                                                                               \
    return body(nparam, params, ndims, shapes, dtypes);                                                        \
  }

FROZEN_BN_ENTRY(FrozenBnForward, forward<Tail::kNone>)
FROZEN_BN_ENTRY(FrozenBnReluForward, forward<Tail::kRelu>)
FROZEN_BN_ENTRY(FrozenBnAddReluForward, forward<Tail::kAddRelu>)
FROZEN_BN_ENTRY(FrozenBnBackward, backward<Tail::kNone>)
FROZEN_BN_ENTRY(FrozenBnReluBackward, backward<Tail::kRelu>)
FROZEN_BN_ENTRY(FrozenBnAddReluBackward, backward<Tail::kAddRelu>)
