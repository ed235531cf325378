// Batched linear sum assignment for the Hungarian matcher: CPU kernel for MindSpore
// ops.Custom(func_type="aot"), OpenMP over the images.
//
// Semantics (identical to src/losses/assignment.py::assign_queries, i.e. scipy's
// linear_sum_assignment per image, same tie-breaking; the solver is lsap.h):
//   cost      (N, Q, M) float32   queries x GT columns, the valid GT of each image first
//   num_valid (N,)      int32     GT count of each image, clamped to [0, M]
//   matched   (N, M)    int32     the query assigned to each GT column; -1 for padded columns
//                                 (col >= num_valid) and for columns left over when n > Q
// NaN/+inf/-inf costs count as 1e8/1e8/-1e8; padded columns are never read.
//
// Entry point (AOT ABI: params = inputs then outputs, return 0 on success):
//   LinearSumAssignment (cost, num_valid) -> matched
// Non-zero returns: 1 wrong number/rank/dtype of the parameters, 2 inconsistent shapes,
// 3 no complete assignment found (cannot happen with the finite costs the solver works on).
#include <cstdint>

#include "lsap.h"

extern "C" int LinearSumAssignment(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void *stream, void *extra) {
  (void)stream;
  (void)extra;
  int64_t N, Q, M;
  if (const int bad = lsap::check_arguments(nparam, ndims, shapes, dtypes, &N, &Q, &M)) return bad;
  const float *cost = static_cast<const float *>(params[0]);
  const int32_t *num_valid = static_cast<const int32_t *>(params[1]);
  int32_t *matched = static_cast<int32_t *>(params[2]);
  int status = 0;
  // One image per work item, dynamically scheduled: images differ in GT count, so in cost. A
  // single image stays serial: waking the thread team would cost more than a small solve.
#pragma omp parallel if (N > 1) reduction(max : status)
  {
    lsap::Workspace w;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < N; ++i)
      if (lsap::solve_image(cost, num_valid, i, Q, M, matched, w) != 0) status = 3;
  }
  return status;
}
