// LayerNorm over the last axis for MindSpore ops.Custom(func_type="aot") on CPU: float32, OpenMP.
//
//   LayerNormForward   x (..., C), gamma (C), beta (C), eps (1)   -> y = (x - mean) * rstd * gamma + beta
//   LayerNormBackward  x, gamma, eps, dy                          -> dx, dgamma (C), dbeta (C)
//
// Why: MindSpore's CPU LayerNorm makes several passes over the tensor per call and its backward
// more; Swin-T's 60 LayerNorms per image touch 75 M elements at 800x1333. Here a row (C <= a few
// thousand floats) stays in L1: the forward reads it twice from cache and writes it once, the
// backward recomputes the row's mean and rstd instead of keeping them. Mean and variance are
// two-pass (variance of the centred row), as MindSpore's and torch's are.
//
// dgamma and dbeta are sums over every row. Each block of kRowsPerBlock rows sums into its own
// slot and the slots are added in block order afterwards, so the result does not depend on the
// thread count or schedule (a training run repeats bit for bit).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_float32.h"

namespace {

constexpr int64_t kRowsPerBlock = 64;

struct Rows {
  int64_t n;  // rows: the product of every axis but the last
  int64_t c;  // normalized size: the last axis
};

inline Rows rows_of(int ndim, const int64_t *shape) {
  const int64_t c = ndim > 0 ? shape[ndim - 1] : 1;
  return {c > 0 ? element_count(ndim, shape) / c : 0, c};
}

// mean and 1 / sqrt(var + eps) of one row.
inline void row_moments(const float *__restrict x, int64_t c, float eps, float *mean, float *rstd) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < c; ++j) sum += x[j];
  const float m = sum / static_cast<float>(c);
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < c; ++j) sq += (x[j] - m) * (x[j] - m);
  *mean = m;
  *rstd = 1.0f / std::sqrt(sq / static_cast<float>(c) + eps);
}

}  // namespace

extern "C" int LayerNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 5) return 1;
  for (int i = 0; i < 4; ++i)
    if (!is_float32(dtypes[i])) return 1;
  const Rows r = rows_of(ndims[0], shapes[0]);
  if (element_count(ndims[1], shapes[1]) != r.c || element_count(ndims[2], shapes[2]) != r.c) return 2;
  const float *__restrict x = static_cast<const float *>(params[0]);
  const float *__restrict gamma = static_cast<const float *>(params[1]);
  const float *__restrict beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *__restrict y = static_cast<float *>(params[4]);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < r.n; ++i) {
    const float *xi = x + i * r.c;
    float *yi = y + i * r.c;
    float mean, rstd;
    row_moments(xi, r.c, eps, &mean, &rstd);
#pragma omp simd
    for (int64_t j = 0; j < r.c; ++j) yi[j] = (xi[j] - mean) * rstd * gamma[j] + beta[j];
  }
  return 0;
}

extern "C" int LayerNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 7) return 1;
  for (int i = 0; i < 4; ++i)
    if (!is_float32(dtypes[i])) return 1;
  const Rows r = rows_of(ndims[0], shapes[0]);
  if (element_count(ndims[1], shapes[1]) != r.c || !same_shape(ndims[0], shapes[0], ndims[3], shapes[3])) return 2;
  const float *__restrict x = static_cast<const float *>(params[0]);
  const float *__restrict gamma = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  const float *__restrict dy = static_cast<const float *>(params[3]);
  float *__restrict dx = static_cast<float *>(params[4]);
  float *__restrict dgamma = static_cast<float *>(params[5]);
  float *__restrict dbeta = static_cast<float *>(params[6]);
  const int64_t blocks = (r.n + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<float> partial(static_cast<size_t>(blocks) * 2 * r.c, 0.0f);  // per block: dgamma, dbeta
  const float inv_c = 1.0f / static_cast<float>(r.c);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    float *__restrict pg = partial.data() + b * 2 * r.c;
    float *__restrict pb = pg + r.c;
    const int64_t end = std::min(r.n, (b + 1) * kRowsPerBlock);
    for (int64_t i = b * kRowsPerBlock; i < end; ++i) {
      const float *xi = x + i * r.c;
      const float *dyi = dy + i * r.c;
      float *dxi = dx + i * r.c;
      float mean, rstd;
      row_moments(xi, r.c, eps, &mean, &rstd);
      // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, xhat = (x - mean) * rstd
      float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t j = 0; j < r.c; ++j) {
        const float g = dyi[j] * gamma[j];
        sum_g += g;
        sum_gx += g * (xi[j] - mean) * rstd;
      }
      const float mean_g = sum_g * inv_c, mean_gx = sum_gx * inv_c;
#pragma omp simd
      for (int64_t j = 0; j < r.c; ++j) {
        const float xhat = (xi[j] - mean) * rstd;
        dxi[j] = rstd * (dyi[j] * gamma[j] - mean_g - xhat * mean_gx);
        pg[j] += dyi[j] * xhat;
        pb[j] += dyi[j];
      }
    }
  }
  std::fill(dgamma, dgamma + r.c, 0.0f);
  std::fill(dbeta, dbeta + r.c, 0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    const float *pg = partial.data() + b * 2 * r.c;
#pragma omp simd
    for (int64_t j = 0; j < r.c; ++j) {
      dgamma[j] += pg[j];
      dbeta[j] += pg[r.c + j];
    }
  }
  return 0;
}
