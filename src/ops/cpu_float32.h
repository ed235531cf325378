// Shared by the float32 CPU kernels (gelu_cpu.cpp, window_attention_cpu.cpp, layer_norm_cpu.cpp, frozen_bn_cpu.cpp,
// sine_embedding_cpu.cpp): argument checks and an exp the compiler vectorizes.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

// exp(v) for v <= 0; below -87 (where exp leaves float's normal range) it returns exp(-87).
// Rounding by adding 1.5 * 2^23 (no float-to-int conversion, which keeps GCC from vectorizing):
// the sum's low mantissa bits hold round(v / ln 2) = k, and 2^k is built from them.
inline float exp_nonpositive(float v) {
  v = std::max(v, -87.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23, bit pattern 0x4B400000
  const float shifted = v * 1.44269504088896341f + kRound;
  const float k = shifted - kRound;
  const float r = (v - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;  // |r| <= ln(2) / 2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t two_to_k = (__builtin_bit_cast(int32_t, shifted) - 0x4B400000 + 127) << 23;  // k in [-126, 0]
  return p * __builtin_bit_cast(float, two_to_k);
}

inline bool is_float32(const char *dtype) { return std::strcmp(dtype, "float32") == 0; }

inline int64_t element_count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  return n;
}

inline bool same_shape(int ndim_a, const int64_t *a, int ndim_b, const int64_t *b) {
  if (ndim_a != ndim_b) return false;
  for (int d = 0; d < ndim_a; ++d)
    if (a[d] != b[d]) return false;
  return true;
}

}  // namespace
