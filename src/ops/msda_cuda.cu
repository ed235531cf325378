// Multi-scale deformable attention sampling core: CUDA kernels for MindSpore
// ops.Custom(func_type="aot") on GPU, forward and backward, float32.
//
// Same entry points, ABI, tensor layouts and semantics as msda_cpu.cpp (see its header); the
// sampling math is the shared msda_sampling.h. Differences forced by the device: the spatial
// shapes tensor lives in device memory, so every thread reads the (L, 2) table itself (L is
// small), and shape/dtype checks are host-side only (a bad value cannot be reported from a
// kernel without a synchronisation, so samples outside a level are skipped, never read).
//
// COMPILED IN CI (nvcc compile check), NEVER RUN ON A GPU HERE: no GPU was available to this
// project's machines. tests/test_ops.py runs this source on the CPU instead (tests/cuda_on_host.py:
// each launch a serial loop over the grid) against the references; tests/test_ops_devices.py
// runs it on the device where MindSpore has a GPU.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "msda_sampling.h"

namespace {

constexpr int kThreads = 256;

using msda::Dims;
using msda::is_type;

// Level l of the (L, 2) int32/int64 device table; start is the prefix sum of h*w.
template <typename I>
__device__ msda::Level level_of(const I *shapes, int64_t l) {
  int64_t start = 0;
  for (int64_t i = 0; i < l; ++i) start += static_cast<int64_t>(shapes[2 * i]) * static_cast<int64_t>(shapes[2 * i + 1]);
  return msda::Level{static_cast<int64_t>(shapes[2 * l]), static_cast<int64_t>(shapes[2 * l + 1]), start};
}

// One thread per output element (b, q, m, k): consecutive threads read consecutive channels.
template <typename I>
__global__ void forward_kernel(Dims d, const float *value, const I *shapes, const float *loc, const float *attn,
                               float *out) {
  const int64_t n = d.B * d.Q * d.M * d.D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = t % d.D;
    const int64_t r = t / d.D;  // (b*Q + q)*M + m
    const int64_t m = r % d.M;
    const int64_t b = r / (d.Q * d.M);
    const float *lp = loc + r * d.L * d.P * 2;
    const float *ap = attn + r * d.L * d.P;
    const float *vb = value + b * d.S * d.M * d.D + m * d.D + k;
    float acc = 0.0f;
    for (int64_t l = 0; l < d.L; ++l) {
      const msda::Level lv = level_of(shapes, l);
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t lpi = l * d.P + p;
        msda::Corners c;
        if (!msda::corners(lp[2 * lpi], lp[2 * lpi + 1], lv, &c)) continue;
        const float a = ap[lpi];
        for (int ci = 0; ci < 4; ++ci) {
          const int64_t token = lv.start + c.idx[ci];
          if (c.in[ci] && token < d.S) acc += a * c.wgt[ci] * vb[token * d.M * d.D];
        }
      }
    }
    out[t] = acc;
  }
}

// One thread per sample (b, q, m, l, p): it owns that sample's location and weight gradients and
// adds its share to grad_value atomically (samples of different queries hit the same pixels).
template <typename I>
__global__ void backward_kernel(Dims d, const float *value, const I *shapes, const float *loc, const float *attn,
                                const float *gout, float *gvalue, float *gloc, float *gattn) {
  const int64_t n = d.B * d.Q * d.M * d.L * d.P;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t lpi = t % (d.L * d.P);
    const int64_t r = t / (d.L * d.P);  // (b*Q + q)*M + m
    const int64_t l = lpi / d.P;
    const int64_t m = r % d.M;
    const int64_t b = r / (d.Q * d.M);
    gloc[2 * t] = 0.0f;
    gloc[2 * t + 1] = 0.0f;
    gattn[t] = 0.0f;
    const msda::Level lv = level_of(shapes, l);
    msda::Corners c;
    if (!msda::corners(loc[2 * t], loc[2 * t + 1], lv, &c)) continue;
    const float a = attn[t];
    const float *g = gout + r * d.D;
    const int64_t base = b * d.S * d.M * d.D + m * d.D;
    float dot[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int ci = 0; ci < 4; ++ci) {
      const int64_t token = lv.start + c.idx[ci];
      if (!c.in[ci] || token >= d.S) continue;
      const float *v = value + base + token * d.M * d.D;
      float *gv = gvalue + base + token * d.M * d.D;
      const float w = a * c.wgt[ci];
      float acc = 0.0f;
      for (int64_t k = 0; k < d.D; ++k) {
        acc += g[k] * v[k];
        atomicAdd(gv + k, w * g[k]);
      }
      dot[ci] = acc;
    }
    msda::sample_grads(c, lv, a, dot, &gattn[t], &gloc[2 * t], &gloc[2 * t + 1]);
  }
}

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);  // grid-stride loops cover the rest
}

}  // namespace

extern "C" int MSDAForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  (void)extra;
  if (nparam != 5) return 1;
  Dims d;
  if (!msda::read_dims(ndims, shapes, dtypes, &d)) return 2;
  if (!is_type(dtypes[4], "float32") || ndims[4] != 3) return 3;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t n = d.B * d.Q * d.M * d.D;
  const float *value = static_cast<const float *>(params[0]);
  const float *loc = static_cast<const float *>(params[2]);
  const float *attn = static_cast<const float *>(params[3]);
  float *out = static_cast<float *>(params[4]);
  if (is_type(dtypes[1], "int32"))
    forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(d, value, static_cast<const int32_t *>(params[1]), loc, attn, out);
  else
    forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(d, value, static_cast<const int64_t *>(params[1]), loc, attn, out);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

extern "C" int MSDABackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  (void)extra;
  if (nparam != 8) return 1;
  Dims d;
  if (!msda::read_dims(ndims, shapes, dtypes, &d)) return 2;
  for (int i = 4; i < 8; ++i)
    if (!is_type(dtypes[i], "float32")) return 3;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const float *value = static_cast<const float *>(params[0]);
  const float *loc = static_cast<const float *>(params[2]);
  const float *attn = static_cast<const float *>(params[3]);
  const float *gout = static_cast<const float *>(params[4]);
  float *gv = static_cast<float *>(params[5]);
  float *gl = static_cast<float *>(params[6]);
  float *ga = static_cast<float *>(params[7]);
  if (cudaMemsetAsync(gv, 0, sizeof(float) * d.B * d.S * d.M * d.D, s) != cudaSuccess) return 4;
  const int64_t n = d.B * d.Q * d.M * d.L * d.P;
  if (is_type(dtypes[1], "int32"))
    backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(d, value, static_cast<const int32_t *>(params[1]), loc, attn,
                                                       gout, gv, gl, ga);
  else
    backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(d, value, static_cast<const int64_t *>(params[1]), loc, attn,
                                                       gout, gv, gl, ga);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}
