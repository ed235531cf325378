// Bilinear sampling math of the deformable attention core, shared by the CPU kernel
// (msda_cpu.cpp) and the CUDA kernel (msda_cuda.cu) so both follow one definition, which the
// CPU tests check against the pure-MindSpore reference.
//
// Convention (grid_sample bilinear, zeros padding, align_corners=False): a location (lx, ly) in
// [0, 1] on a level of h x w pixels is the pixel coordinate x = lx * w - 0.5, y = ly * h - 0.5;
// neighbours outside the map contribute zero, and their bilinear weights still shape the
// gradient with respect to the location.
#ifndef FOCUS_DETR_MSDA_SAMPLING_H_
#define FOCUS_DETR_MSDA_SAMPLING_H_

#include <cstdint>

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

}  // namespace msda

#endif  // FOCUS_DETR_MSDA_SAMPLING_H_
