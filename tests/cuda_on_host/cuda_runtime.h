// A host stand-in for the part of the CUDA runtime that src/ops/*.cu use, so their kernels can
// run on the CPU in the tests (tests/cuda_on_host.py): no GPU has been lent to this project.
//
// A launch runs every (block, thread) of the grid one after another, so the kernels' indexing,
// bounds checks and grid-stride loops execute as written; atomicAdd becomes a plain add (exact
// for a serial run, only the summation order differs from a GPU). What this cannot check:
// real concurrency, the launch limits of a device, and nvcc's own code generation (the
// compile check covers the latter).
#ifndef FOCUS_DETR_CUDA_ON_HOST_H_
#define FOCUS_DETR_CUDA_ON_HOST_H_

#include <cstddef>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};
inline dim3 blockIdx, threadIdx, blockDim, gridDim;

struct CUstream_st;
typedef CUstream_st *cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };
// the runtime's values; "device" memory is host memory here, so every kind is a memcpy
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

inline cudaError_t cudaGetLastError() { return cudaSuccess; }

inline cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

// A launch or copy here completes before the call returns, so there is never anything to wait for.
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

inline float atomicAdd(float *address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}

// What `kernel<<<grid, block, shared, stream>>>(args)` becomes (tests/cuda_on_host.py rewrites it).
template <typename Body>
void launch_on_host(unsigned int grid, unsigned int block, Body body) {
  gridDim.x = grid;
  blockDim.x = block;
  for (unsigned int b = 0; b < grid; ++b) {
    blockIdx.x = b;
    for (unsigned int t = 0; t < block; ++t) {
      threadIdx.x = t;
      body();
    }
  }
}

#endif  // FOCUS_DETR_CUDA_ON_HOST_H_
