// The image's sine position embedding (detrex PositionEmbeddingSine after its running counts) as
// one pass, for MindSpore ops.Custom(func_type="aot") on CPU: float32, OpenMP over positions.
//
//   SineEmbeddingForward  y, x (B, h, w), dim_t (K)  -> out (B, h, w, 4K)
//     out[..., 2k] = sin(y / dim_t[k]), out[..., 2k + 1] = cos(y / dim_t[k])            k < K
//     out[..., 2K + 2k] = sin(x / dim_t[k]), out[..., 2K + 2k + 1] = cos(x / dim_t[k])
//
// Why: in MindSpore's CPU graph the official form -- divide by dim_t, sin of the even channels,
// cos of the odd ones, stack, flatten, then the y and x halves concatenated -- is six passes over
// a (B, h, w, 2K) tensor per half and level (R50 at 800x1333: 22k positions x 256 channels).
// Here each position's 4K values are written once. The division stays a division (the official
// y / dim_t, not a product with the reciprocal), so the arguments of sin and cos are the same floats.
#include <cmath>
#include <cstdint>

#include "cpu_float32.h"

namespace {

int forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 4) return 1;
  for (int i = 0; i < nparam; ++i)
    if (!is_float32(dtypes[i])) return 1;
  if (!same_shape(ndims[0], shapes[0], ndims[1], shapes[1]) || ndims[2] != 1) return 2;
  const int64_t positions = element_count(ndims[0], shapes[0]);
  const int64_t pairs = shapes[2][0];
  if (ndims[3] != ndims[0] + 1 || shapes[3][ndims[0]] != 4 * pairs) return 2;
  const float *y = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *dim_t = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[3]);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < positions; ++p) {
    float *__restrict row = out + p * 4 * pairs;
    const float coordinate[2] = {y[p], x[p]};
    for (int half = 0; half < 2; ++half) {
      float *__restrict dst = row + half * 2 * pairs;
      for (int64_t k = 0; k < pairs; ++k) {
        const float v = coordinate[half] / dim_t[k];
        dst[2 * k] = std::sin(v);
        dst[2 * k + 1] = std::cos(v);
      }
    }
  }
  return 0;
}

}  // namespace

extern "C" int SineEmbeddingForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  (void)stream;
  (void)extra;
  return forward(nparam, params, ndims, shapes, dtypes);
}
