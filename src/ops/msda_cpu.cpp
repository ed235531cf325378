// Multi-scale deformable attention sampling core: fused CPU kernels for MindSpore
// ops.Custom(func_type="aot"), forward and backward, float32, OpenMP.
//
// Semantics (identical to src/layers/ms_deform_attn.py::MSDeformAttnCoreReference, i.e. detrex
// multi_scale_deformable_attn_pytorch with F.grid_sample bilinear, zeros padding,
// align_corners=False):
//   value              (B, S, M, D)      float32, levels concatenated row-major in S
//   spatial_shapes     (L, 2)            int32 or int64, (h, w) per level
//   sampling_locations (B, Q, M, L, P, 2) float32, (x, y) in [0, 1]; pixel i has centre (i+0.5)/w
//   attention_weights  (B, Q, M, L, P)    float32
//   output             (B, Q, M*D)        float32, head-major channels
// The sampling math (coordinate convention, corners, gradients) is msda_sampling.h, shared with
// the CUDA kernel msda_cuda.cu.
//
// Entry points (AOT ABI: params = inputs then outputs, return 0 on success):
//   MSDAForward  (value, shapes, locations, weights) -> output
//   MSDABackward (value, shapes, locations, weights, grad_output)
//                -> grad_value, grad_locations, grad_weights
//   (MSDAForwardInferShape / MSDAForwardInferType live in aot_infer.cpp.)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "msda_sampling.h"


namespace {

using msda::Corners;
using msda::Dims;
using msda::Level;
using msda::corners;
using msda::is_type;

// Reads the (L, 2) int32/int64 spatial-shape tensor (host memory on CPU).
bool read_levels(const void *ptr, const char *dtype, int64_t levels, std::vector<Level> *out) {
  out->resize(levels);
  int64_t start = 0;
  for (int64_t l = 0; l < levels; ++l) {
    int64_t h, w;
    if (is_type(dtype, "int32")) {
      h = static_cast<const int32_t *>(ptr)[2 * l];
      w = static_cast<const int32_t *>(ptr)[2 * l + 1];
    } else if (is_type(dtype, "int64")) {
      h = static_cast<const int64_t *>(ptr)[2 * l];
      w = static_cast<const int64_t *>(ptr)[2 * l + 1];
    } else {
      return false;
    }
    if (h <= 0 || w <= 0) return false;
    (*out)[l] = Level{h, w, start};
    start += h * w;
  }
  return true;
}

// Validates the four common inputs; fills dims and levels.
bool check_inputs(int *ndims, int64_t **shapes, const char **dtypes, void **params, Dims *d,
                  std::vector<Level> *levels) {
  if (!msda::read_dims(ndims, shapes, dtypes, d)) return false;
  if (!read_levels(params[1], dtypes[1], d->L, levels)) return false;
  const Level &last = levels->back();
  return last.start + last.h * last.w == d->S;
}

// DC > 0: the head dimension is the compile-time constant DC (fully unrolled/vectorized inner
// loops); DC == 0: any head dimension d.D.
template <int DC>
void forward_impl(const Dims &d, const std::vector<Level> &levels, const float *value, const float *loc,
                  const float *attn, float *out) {
  const int64_t S = d.S, M = d.M, D = DC > 0 ? DC : d.D, Q = d.Q, L = d.L, P = d.P;
  const int64_t rows = d.B * Q * M;
  // One output row (b, q, m) per work item; m innermost, so the heads of one query (which
  // sample around the same reference point) read neighbouring value rows.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {  // r = (b*Q + q)*M + m
    const int64_t m = r % M;
    const int64_t b = r / (Q * M);
    float *o = out + r * D;  // (B,Q,M,D) == (B,Q,M*D)
    for (int64_t k = 0; k < D; ++k) o[k] = 0.0f;
    const float *lp = loc + r * L * P * 2;
    const float *ap = attn + r * L * P;
    const float *vb = value + b * S * M * D + m * D;
    for (int64_t l = 0; l < L; ++l) {
      const Level &lv = levels[l];
      const float *vl = vb + lv.start * M * D;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t lpi = l * P + p;
        const float a = ap[lpi];
        Corners c;
        if (!corners(lp[2 * lpi], lp[2 * lpi + 1], lv, &c)) continue;
        for (int ci = 0; ci < 4; ++ci) {
          if (!c.in[ci]) continue;
          const float w = a * c.wgt[ci];
          const float *v = vl + c.idx[ci] * M * D;
#pragma omp simd
          for (int64_t k = 0; k < D; ++k) o[k] += w * v[k];
        }
      }
    }
  }
}

// Work is split over (b, m) pairs: each thread owns the grad_value rows of its head exclusively
// (no atomics, deterministic), and the location/weight gradients of that head.
template <int DC>
void backward_impl(const Dims &d, const std::vector<Level> &levels, const float *value, const float *loc,
                   const float *attn, const float *gout, float *gvalue, float *gloc, float *gattn) {
  const int64_t S = d.S, M = d.M, D = DC > 0 ? DC : d.D, Q = d.Q, L = d.L, P = d.P;
  const int64_t units = d.B * M;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t b = u / M, m = u % M;
    const float *vb = value + b * S * M * D + m * D;
    float *gvb = gvalue + b * S * M * D + m * D;
    for (int64_t s = 0; s < S; ++s) std::memset(gvb + s * M * D, 0, sizeof(float) * D);
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t r = (b * Q + q) * M + m;
      const float *g = gout + r * D;
      const float *lp = loc + r * L * P * 2;
      const float *ap = attn + r * L * P;
      float *glp = gloc + r * L * P * 2;
      float *gap = gattn + r * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const Level &lv = levels[l];
        const float *vl = vb + lv.start * M * D;
        float *gvl = gvb + lv.start * M * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t lpi = l * P + p;
          glp[2 * lpi] = 0.0f;
          glp[2 * lpi + 1] = 0.0f;
          gap[lpi] = 0.0f;
          Corners c;
          if (!corners(lp[2 * lpi], lp[2 * lpi + 1], lv, &c)) continue;
          const float a = ap[lpi];
          float dot[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // <grad_out, value at corner>
          for (int ci = 0; ci < 4; ++ci) {
            if (!c.in[ci]) continue;
            const float *v = vl + c.idx[ci] * M * D;
            float *gv = gvl + c.idx[ci] * M * D;
            const float w = a * c.wgt[ci];
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < D; ++k) acc += g[k] * v[k];
#pragma omp simd
            for (int64_t k = 0; k < D; ++k) gv[k] += w * g[k];
            dot[ci] = acc;
          }
          msda::sample_grads(c, lv, a, dot, &gap[lpi], &glp[2 * lpi], &glp[2 * lpi + 1]);
        }
      }
    }
  }
}

}  // namespace

extern "C" int MSDAForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 5) return 1;
  Dims d;
  std::vector<Level> levels;
  if (!check_inputs(ndims, shapes, dtypes, params, &d, &levels)) return 2;
  if (!is_type(dtypes[4], "float32") || ndims[4] != 3) return 3;
  const float *value = static_cast<const float *>(params[0]);
  const float *loc = static_cast<const float *>(params[2]);
  const float *attn = static_cast<const float *>(params[3]);
  float *out = static_cast<float *>(params[4]);
  switch (d.D) {
    case 16: forward_impl<16>(d, levels, value, loc, attn, out); break;
    case 32: forward_impl<32>(d, levels, value, loc, attn, out); break;
    case 64: forward_impl<64>(d, levels, value, loc, attn, out); break;
    default: forward_impl<0>(d, levels, value, loc, attn, out); break;
  }
  return 0;
}

extern "C" int MSDABackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 8) return 1;
  Dims d;
  std::vector<Level> levels;
  if (!check_inputs(ndims, shapes, dtypes, params, &d, &levels)) return 2;
  for (int i = 4; i < 8; ++i)
    if (!is_type(dtypes[i], "float32")) return 3;
  const float *value = static_cast<const float *>(params[0]);
  const float *loc = static_cast<const float *>(params[2]);
  const float *attn = static_cast<const float *>(params[3]);
  const float *gout = static_cast<const float *>(params[4]);
  float *gv = static_cast<float *>(params[5]);
  float *gl = static_cast<float *>(params[6]);
  float *ga = static_cast<float *>(params[7]);
  switch (d.D) {
    case 16: backward_impl<16>(d, levels, value, loc, attn, gout, gv, gl, ga); break;
    case 32: backward_impl<32>(d, levels, value, loc, attn, gout, gv, gl, ga); break;
    case 64: backward_impl<64>(d, levels, value, loc, attn, gout, gv, gl, ga); break;
    default: backward_impl<0>(d, levels, value, loc, attn, gout, gv, gl, ga); break;
  }
  return 0;
}
