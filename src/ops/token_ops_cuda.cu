// Sparse token gather/scatter for the Focus-DETR encoder: CUDA kernels for MindSpore
// ops.Custom(func_type="aot") on GPU, float32 rows, int32 or int64 indices.
//
// Same entry points, ABI and semantics as token_ops_cpu.cpp (see its header). On the device an
// index outside [0, S) cannot be reported without a synchronisation, so such rows are skipped
// (never read or written out of bounds); the CPU kernel fails on them instead.
//
// COMPILED IN CI (nvcc compile check), NEVER RUN ON A GPU HERE: no GPU was available to this
// project's machines. tests/test_ops.py runs this source on the CPU instead (tests/cuda_on_host.py:
// each launch a serial loop over the grid) against the references; tests/test_ops_devices.py
// runs it on the device where MindSpore has a GPU.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <vector>


namespace {

constexpr int kThreads = 256;

bool is_type(const char *dtype, const char *name) { return std::strcmp(dtype, name) == 0; }

bool is_index(const char *dtype) { return is_type(dtype, "int32") || is_type(dtype, "int64"); }

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

#define GRID_STRIDE(t, n)                                                               \
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < (n); \
       t += static_cast<int64_t>(gridDim.x) * blockDim.x)

// count[b] clamped to [0, K], read on the device
template <typename C>
__device__ int64_t count_of(const C *count, int64_t b, int64_t K) {
  const int64_t v = static_cast<int64_t>(count[b]);
  return v < 0 ? 0 : (v > K ? K : v);
}

// out[b, k, c] = x[b, idx[b, k], c]; one thread per output element
template <typename I>
__global__ void gather_kernel(int64_t B, int64_t S, int64_t C, int64_t K, const float *x, const I *idx, float *out) {
  GRID_STRIDE(t, B * K * C) {
    const int64_t c = t % C, r = t / C, b = r / K;
    const int64_t s = static_cast<int64_t>(idx[r]);
    out[t] = (s >= 0 && s < S) ? x[(b * S + s) * C + c] : 0.0f;
  }
}

// dx[b, idx[b, k], c] += dout[b, k, c] (repeated indices accumulate); dx zeroed beforehand
template <typename I>
__global__ void gather_grad_kernel(int64_t B, int64_t S, int64_t C, int64_t K, const I *idx, const float *dout,
                                   float *dx) {
  GRID_STRIDE(t, B * K * C) {
    const int64_t c = t % C, r = t / C, b = r / K;
    const int64_t s = static_cast<int64_t>(idx[r]);
    if (s >= 0 && s < S) atomicAdd(dx + (b * S + s) * C + c, dout[t]);
  }
}

// out (a copy of x) gets rows[b, k] at idx[b, k] for k < count[b]
template <typename I, typename N>
__global__ void scatter_kernel(int64_t B, int64_t S, int64_t C, int64_t K, const I *idx, const float *rows,
                               const N *count, float *out) {
  GRID_STRIDE(t, B * K * C) {
    const int64_t c = t % C, r = t / C, b = r / K, k = r % K;
    const int64_t s = static_cast<int64_t>(idx[r]);
    if (k < count_of(count, b, K) && s >= 0 && s < S) out[(b * S + s) * C + c] = rows[t];
  }
}

// drows[b, k] = dout[b, idx[b, k]] for k < count[b], else 0 (reads dout, not dx: no ordering issue)
template <typename I, typename N>
__global__ void scatter_grad_rows_kernel(int64_t B, int64_t S, int64_t C, int64_t K, const I *idx, const N *count,
                                         const float *dout, float *drows) {
  GRID_STRIDE(t, B * K * C) {
    const int64_t c = t % C, r = t / C, b = r / K, k = r % K;
    const int64_t s = static_cast<int64_t>(idx[r]);
    drows[t] = (k < count_of(count, b, K) && s >= 0 && s < S) ? dout[(b * S + s) * C + c] : 0.0f;
  }
}

// dx (a copy of dout) gets zeros on the overwritten rows
template <typename I, typename N>
__global__ void scatter_grad_x_kernel(int64_t B, int64_t S, int64_t C, int64_t K, const I *idx, const N *count,
                                      float *dx) {
  GRID_STRIDE(t, B * K * C) {
    const int64_t c = t % C, r = t / C, b = r / K, k = r % K;
    const int64_t s = static_cast<int64_t>(idx[r]);
    if (k < count_of(count, b, K) && s >= 0 && s < S) dx[(b * S + s) * C + c] = 0.0f;
  }
}

template <typename I, typename N>
void launch_scatter(int64_t B, int64_t S, int64_t C, int64_t K, void **params, cudaStream_t st) {
  scatter_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(
      B, S, C, K, static_cast<const I *>(params[1]), static_cast<const float *>(params[2]),
      static_cast<const N *>(params[3]), static_cast<float *>(params[4]));
}

template <typename I, typename N>
void launch_scatter_grad(int64_t B, int64_t S, int64_t C, int64_t K, void **params, cudaStream_t st) {
  const I *idx = static_cast<const I *>(params[1]);
  const N *count = static_cast<const N *>(params[3]);
  const float *dout = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *drows = static_cast<float *>(params[6]);
  scatter_grad_rows_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, idx, count, dout, drows);
  scatter_grad_x_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, idx, count, dx);
}

// Calls f(I{}, N{}) with the index and count element types named by the two dtypes (int32/int64).
template <typename F>
void with_index_types(const char *index_dtype, const char *count_dtype, F f) {
  const bool wide_count = is_type(count_dtype, "int64");
  if (is_type(index_dtype, "int64")) {
    if (wide_count) f(int64_t{}, int64_t{}); else f(int64_t{}, int32_t{});
  } else {
    if (wide_count) f(int32_t{}, int64_t{}); else f(int32_t{}, int32_t{});
  }
}

}  // namespace

extern "C" int RowGather(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                         void *stream, void *extra) {
  (void)extra;
  if (nparam != 3 || ndims[0] != 3 || ndims[1] != 2 || !is_type(dtypes[0], "float32") || !is_index(dtypes[1]))
    return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B) return 2;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const float *x = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[2]);
  if (is_type(dtypes[1], "int32"))
    gather_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, x, static_cast<const int32_t *>(params[1]), out);
  else
    gather_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, x, static_cast<const int64_t *>(params[1]), out);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

extern "C" int RowGatherGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  (void)extra;
  if (nparam != 4 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3 || !is_index(dtypes[1])) return 1;
  if (!is_type(dtypes[2], "float32") || !is_type(dtypes[3], "float32")) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[2][0] != B || shapes[2][1] != K || shapes[2][2] != C) return 2;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const float *dout = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  if (cudaMemsetAsync(dx, 0, sizeof(float) * B * S * C, st) != cudaSuccess) return 4;
  if (is_type(dtypes[1], "int32"))
    gather_grad_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, static_cast<const int32_t *>(params[1]),
                                                                  dout, dx);
  else
    gather_grad_kernel<<<blocks_for(B * K * C), kThreads, 0, st>>>(B, S, C, K, static_cast<const int64_t *>(params[1]),
                                                                  dout, dx);
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

extern "C" int RowScatter(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                          void *stream, void *extra) {
  (void)extra;
  if (nparam != 5 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3 || ndims[3] != 1) return 1;
  if (!is_type(dtypes[0], "float32") || !is_type(dtypes[2], "float32") || !is_index(dtypes[1]) ||
      !is_index(dtypes[3]))
    return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[2][0] != B || shapes[2][1] != K || shapes[2][2] != C || shapes[3][0] != B) return 2;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (cudaMemcpyAsync(params[4], params[0], sizeof(float) * B * S * C, cudaMemcpyDeviceToDevice, st) != cudaSuccess)
    return 4;
  with_index_types(dtypes[1], dtypes[3], [&](auto index, auto count) {
    launch_scatter<decltype(index), decltype(count)>(B, S, C, K, params, st);
  });
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}

extern "C" int RowScatterGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  (void)extra;
  if (nparam != 7 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3 || ndims[3] != 1 || ndims[4] != 3) return 1;
  for (int i : {4, 5, 6})
    if (!is_type(dtypes[i], "float32")) return 1;
  if (!is_index(dtypes[1]) || !is_index(dtypes[3])) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[3][0] != B || shapes[4][0] != B || shapes[4][1] != S || shapes[4][2] != C) return 2;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (cudaMemcpyAsync(params[5], params[4], sizeof(float) * B * S * C, cudaMemcpyDeviceToDevice, st) != cudaSuccess)
    return 4;
  with_index_types(dtypes[1], dtypes[3], [&](auto index, auto count) {
    launch_scatter_grad<decltype(index), decltype(count)>(B, S, C, K, params, st);
  });
  return cudaGetLastError() == cudaSuccess ? 0 : 4;
}
