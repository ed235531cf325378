// Sparse token gather/scatter for the Focus-DETR encoder: CPU kernels for MindSpore
// ops.Custom(func_type="aot"), float32 rows, int32 or int64 indices, OpenMP.
//
// Semantics (identical to src/layers/token_ops.py):
//   RowGather      x (B,S,C), idx (B,K)                       -> out (B,K,C), out[b,k] = x[b, idx[b,k]]
//   RowGatherGrad  x (B,S,C), idx (B,K), dout (B,K,C)         -> dx (B,S,C), scatter-add (repeated
//                                                                 indices accumulate)
//   RowScatter     x (B,S,C), idx (B,K), rows (B,K,C), count (B,)
//                  -> out = x; out[b, idx[b,k]] = rows[b,k] for k < count[b]
//   RowScatterGrad x, idx, rows, count, dout (B,S,C)
//                  -> dx = dout with the overwritten rows zeroed, drows[b,k] = dout[b, idx[b,k]]
//                     for k < count[b], else 0
// Indices outside [0, S) make the kernel fail (non-zero return), never read or write out of bounds.
#include <cstdint>
#include <cstring>
#include <vector>


namespace {

bool is_type(const char *dtype, const char *name) { return std::strcmp(dtype, name) == 0; }

// Reads index (b, k) of a (B, K) int32/int64 tensor.
struct Index {
  const void *ptr;
  bool wide;
  inline int64_t operator()(int64_t i) const {
    return wide ? static_cast<const int64_t *>(ptr)[i] : static_cast<int64_t>(static_cast<const int32_t *>(ptr)[i]);
  }
};

bool make_index(const void *ptr, const char *dtype, Index *out) {
  if (is_type(dtype, "int32")) {
    *out = Index{ptr, false};
    return true;
  }
  if (is_type(dtype, "int64")) {
    *out = Index{ptr, true};
    return true;
  }
  return false;
}

bool indices_in_range(const Index &idx, int64_t n, int64_t S) {
  bool ok = true;
#pragma omp parallel for reduction(&& : ok) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = idx(i);
    ok = ok && v >= 0 && v < S;
  }
  return ok;
}

// count[b] clamped to [0, K].
bool read_counts(const void *ptr, const char *dtype, int64_t B, int64_t K, std::vector<int64_t> *out) {
  Index c;
  if (!make_index(ptr, dtype, &c)) return false;
  out->resize(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t v = c(b);
    (*out)[b] = v < 0 ? 0 : (v > K ? K : v);
  }
  return true;
}

constexpr int64_t kBlock = 64;  // channel block owned by one thread in the scatter-add

}  // namespace

extern "C" int RowGather(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                         void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[0] != 3 || ndims[1] != 2 || !is_type(dtypes[0], "float32")) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B) return 2;
  Index idx;
  if (!make_index(params[1], dtypes[1], &idx)) return 3;
  if (!indices_in_range(idx, B * K, S)) return 4;
  const float *x = static_cast<const float *>(params[0]);
  float *out = static_cast<float *>(params[2]);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * K; ++r) {
    const int64_t b = r / K;
    std::memcpy(out + r * C, x + (b * S + idx(r)) * C, sizeof(float) * C);
  }
  return 0;
}

extern "C" int RowGatherGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 4 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3) return 1;
  if (!is_type(dtypes[2], "float32") || !is_type(dtypes[3], "float32")) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[2][0] != B || shapes[2][1] != K || shapes[2][2] != C) return 2;
  Index idx;
  if (!make_index(params[1], dtypes[1], &idx)) return 3;
  if (!indices_in_range(idx, B * K, S)) return 4;
  const float *dout = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * S; ++i) std::memset(dx + i * C, 0, sizeof(float) * C);
    // each (b, channel block) is owned by one thread: repeated indices accumulate without races
#pragma omp for schedule(static)
    for (int64_t u = 0; u < B * blocks; ++u) {
      const int64_t b = u / blocks, c0 = (u % blocks) * kBlock;
      const int64_t c1 = c0 + kBlock < C ? c0 + kBlock : C;
      for (int64_t k = 0; k < K; ++k) {
        const float *src = dout + (b * K + k) * C;
        float *dst = dx + (b * S + idx(b * K + k)) * C;
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  }
  return 0;
}

extern "C" int RowScatter(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                          void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 5 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3 || ndims[3] != 1) return 1;
  if (!is_type(dtypes[0], "float32") || !is_type(dtypes[2], "float32")) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[2][0] != B || shapes[2][1] != K || shapes[2][2] != C || shapes[3][0] != B) return 2;
  Index idx;
  std::vector<int64_t> count;
  if (!make_index(params[1], dtypes[1], &idx) || !read_counts(params[3], dtypes[3], B, K, &count)) return 3;
  if (!indices_in_range(idx, B * K, S)) return 4;
  const float *x = static_cast<const float *>(params[0]);
  const float *rows = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[4]);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * S; ++i) std::memcpy(out + i * C, x + i * C, sizeof(float) * C);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * K; ++r) {
      const int64_t b = r / K, k = r % K;
      if (k < count[b]) std::memcpy(out + (b * S + idx(r)) * C, rows + r * C, sizeof(float) * C);
    }
  }
  return 0;
}

extern "C" int RowScatterGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 7 || ndims[0] != 3 || ndims[1] != 2 || ndims[2] != 3 || ndims[3] != 1 || ndims[4] != 3) return 1;
  for (int i : {4, 5, 6})
    if (!is_type(dtypes[i], "float32")) return 1;
  const int64_t B = shapes[0][0], S = shapes[0][1], C = shapes[0][2], K = shapes[1][1];
  if (shapes[1][0] != B || shapes[3][0] != B || shapes[4][0] != B || shapes[4][1] != S || shapes[4][2] != C) return 2;
  Index idx;
  std::vector<int64_t> count;
  if (!make_index(params[1], dtypes[1], &idx) || !read_counts(params[3], dtypes[3], B, K, &count)) return 3;
  if (!indices_in_range(idx, B * K, S)) return 4;
  const float *dout = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *drows = static_cast<float *>(params[6]);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * S; ++i) std::memcpy(dx + i * C, dout + i * C, sizeof(float) * C);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * K; ++r) {
      const int64_t b = r / K, k = r % K;
      if (k < count[b])
        std::memcpy(drows + r * C, dout + (b * S + idx(r)) * C, sizeof(float) * C);
      else
        std::memset(drows + r * C, 0, sizeof(float) * C);
    }
    // the implicit barrier above: drows is read from dout before the overwritten rows are zeroed
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * K; ++r) {
      const int64_t b = r / K, k = r % K;
      if (k < count[b]) std::memset(dx + (b * S + idx(r)) * C, 0, sizeof(float) * C);
    }
  }
  return 0;
}
