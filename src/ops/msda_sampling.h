// What the CPU kernel (msda_cpu.cpp) and the CUDA kernel (msda_cuda.cu) of the deformable
// attention core share, so both follow one definition that the CPU tests check against the
// pure-MindSpore reference: the bilinear sampling math, and the host-side argument checks.
//
// Convention (grid_sample bilinear, zeros padding, align_corners=False): a location (lx, ly) in
// [0, 1] on a level of h x w pixels is the pixel coordinate x = lx * w - 0.5, y = ly * h - 0.5;
// neighbours outside the map contribute zero, and their bilinear weights still shape the
// gradient with respect to the location.
#ifndef FOCUS_DETR_MSDA_SAMPLING_H_
#define FOCUS_DETR_MSDA_SAMPLING_H_

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define MSDA_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define MSDA_HD inline
#endif

namespace msda {

struct Level {
  int64_t h, w, start;  // start: first token of the level in the flattened S axis
};

// The four neighbours of one sample.
struct Corners {
  int64_t idx[4];  // token offsets from the level start (meaningful only where in[c])
  bool in[4];
  float wgt[4];    // bilinear weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx*fy
  float fx, fy;
};

// Fills ``c``; false when no neighbour can matter (x outside [-1, w) or y outside [-1, h), or NaN).
MSDA_HD bool corners(float lx, float ly, const Level &lv, Corners *c) {
  const float x = lx * static_cast<float>(lv.w) - 0.5f;
  const float y = ly * static_cast<float>(lv.h) - 0.5f;
  if (!(x >= -1.0f && x < static_cast<float>(lv.w) && y >= -1.0f && y < static_cast<float>(lv.h))) return false;
  const float x0f = floorf(x), y0f = floorf(y);
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  c->fx = x - x0f;
  c->fy = y - y0f;
  const bool xin0 = x0 >= 0, xin1 = x0 + 1 <= lv.w - 1;
  const bool yin0 = y0 >= 0, yin1 = y0 + 1 <= lv.h - 1;
  c->in[0] = xin0 && yin0;
  c->in[1] = xin1 && yin0;
  c->in[2] = xin0 && yin1;
  c->in[3] = xin1 && yin1;
  c->idx[0] = y0 * lv.w + x0;
  c->idx[1] = c->idx[0] + 1;
  c->idx[2] = c->idx[0] + lv.w;
  c->idx[3] = c->idx[2] + 1;
  const float gx = 1.0f - c->fx, gy = 1.0f - c->fy;
  c->wgt[0] = gx * gy;
  c->wgt[1] = c->fx * gy;
  c->wgt[2] = gx * c->fy;
  c->wgt[3] = c->fx * c->fy;
  return true;
}

// Gradients of one sample a * bilinear(value) from dot[c] = <grad_output, value at corner c>:
// the attention weight's, and the location's (x and y, in [0, 1] units).
MSDA_HD void sample_grads(const Corners &c, const Level &lv, float a, const float dot[4], float *grad_weight,
                          float *grad_x, float *grad_y) {
  const float gx = 1.0f - c.fx, gy = 1.0f - c.fy;
  *grad_weight = c.wgt[0] * dot[0] + c.wgt[1] * dot[1] + c.wgt[2] * dot[2] + c.wgt[3] * dot[3];
  // d/dx of the bilinear weights: -(1-fy), (1-fy), -fy, fy; d/dy: -(1-fx), -fx, (1-fx), fx
  const float dx = gy * (dot[1] - dot[0]) + c.fy * (dot[3] - dot[2]);
  const float dy = gx * (dot[2] - dot[0]) + c.fx * (dot[3] - dot[1]);
  *grad_x = a * dx * static_cast<float>(lv.w);
  *grad_y = a * dy * static_cast<float>(lv.h);
}

// ---- host side: the AOT arguments value, spatial_shapes, sampling_locations, attention_weights

struct Dims {
  int64_t B, S, M, D, Q, L, P;
};

inline bool is_type(const char *dtype, const char *name) { return std::strcmp(dtype, name) == 0; }

// Checks ranks, dtypes and the consistency of the four inputs' shapes and fills ``d``; the
// values of the (L, 2) shape table are the caller's to read (host memory on CPU only).
inline bool read_dims(const int *ndims, int64_t *const *shapes, const char *const *dtypes, Dims *d) {
  if (ndims[0] != 4 || ndims[1] != 2 || ndims[2] != 6 || ndims[3] != 5) return false;
  if (!is_type(dtypes[0], "float32") || !is_type(dtypes[2], "float32") || !is_type(dtypes[3], "float32"))
    return false;
  if (!is_type(dtypes[1], "int32") && !is_type(dtypes[1], "int64")) return false;
  d->B = shapes[0][0];
  d->S = shapes[0][1];
  d->M = shapes[0][2];
  d->D = shapes[0][3];
  d->Q = shapes[2][1];
  d->L = shapes[2][3];
  d->P = shapes[2][4];
  if (d->B < 0 || d->S <= 0 || d->M <= 0 || d->D <= 0 || d->Q < 0 || d->L <= 0 || d->P <= 0) return false;
  const int64_t *ls = shapes[2];
  if (ls[0] != d->B || ls[2] != d->M || ls[5] != 2 || shapes[1][0] != d->L || shapes[1][1] != 2) return false;
  const int64_t *as = shapes[3];
  return as[0] == d->B && as[1] == d->Q && as[2] == d->M && as[3] == d->L && as[4] == d->P;
}

}  // namespace msda

#endif  // FOCUS_DETR_MSDA_SAMPLING_H_
