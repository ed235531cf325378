// Batched linear sum assignment for the Hungarian matcher: the GPU library's entry point for
// MindSpore ops.Custom(func_type="aot").
//
// Same entry point, ABI, semantics and return codes as lsap_cpu.cpp (see its header), plus
// 4: a CUDA copy or synchronisation failed.
//
// The solve runs on the host, not in a kernel: the shortest augmenting path method is a
// sequence of dependent searches (each row's depends on the duals left by the previous one),
// the problems are small (Q x n with n ~ 10-100 GT columns), and the result must match scipy
// bit for bit, which the shared double-precision host solver (lsap.h) guarantees. What the GPU
// library adds is that the operator exists on GPU at all, so the matcher stays inside the graph
// there: MindSpore's pyfunc custom ops are CPU-only, and its built-in
// mindspore.scipy.optimize.linear_sum_assignment has no GPU kernel. The cost of the round trip
// is one device->host copy of (N, Q, M) floats, one host->device copy of (N, M) ints and two
// stream synchronisations per call.
//
// COMPILED IN CI (nvcc compile check), NEVER RUN ON A GPU HERE: tests/test_lsap_kernel.py runs
// this source on the CPU through tests/cuda_on_host.py (the runtime calls become memcpy).
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "lsap.h"

extern "C" int LinearSumAssignment(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  (void)extra;
  int64_t N, Q, M;
  if (const int bad = lsap::check_arguments(nparam, ndims, shapes, dtypes, &N, &Q, &M)) return bad;
  if (N == 0 || M == 0) return 0;  // empty output, nothing to copy
  cudaStream_t s = static_cast<cudaStream_t>(stream);

  // Plain (pageable) host memory, not cudaMallocHost: pinning a fresh buffer costs more per call
  // (a driver call that maps pages, and an implicit synchronisation) than it saves on copies of
  // a few MB (14 x 900 x 40 floats = 2 MB), and a pinned buffer kept across calls would be global
  // state shared by every stream and thread that runs this operator. The vectors live until the
  // function returns, i.e. after the synchronisations below, so they outlive both copies.
  std::vector<float> cost(static_cast<size_t>(N * Q * M));
  std::vector<int32_t> num_valid(static_cast<size_t>(N));
  std::vector<int32_t> matched(static_cast<size_t>(N * M));
  if (cudaMemcpyAsync(cost.data(), params[0], sizeof(float) * cost.size(), cudaMemcpyDeviceToHost, s) !=
          cudaSuccess ||
      cudaMemcpyAsync(num_valid.data(), params[1], sizeof(int32_t) * num_valid.size(), cudaMemcpyDeviceToHost,
                      s) != cudaSuccess ||
      cudaStreamSynchronize(s) != cudaSuccess)
    return 4;

  // Serial over the images: this library is built without OpenMP, and a batch is ~14 solves of
  // well under a millisecond each.
  const int status = lsap::solve_batch(cost.data(), num_valid.data(), N, Q, M, matched.data()) != 0 ? 3 : 0;

  if (cudaMemcpyAsync(params[2], matched.data(), sizeof(int32_t) * matched.size(), cudaMemcpyHostToDevice, s) !=
          cudaSuccess ||
      cudaStreamSynchronize(s) != cudaSuccess)
    return 4;
  return status;
}
