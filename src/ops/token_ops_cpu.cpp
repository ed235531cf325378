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
//
// Every (B,S,C) output is written in one pass over its rows, through non-temporal stores where
// the CPU has them: zeroing or copying 45 MB (R50 at 800x1333) and then revisiting the selected
// rows costs twice the memory traffic (each cold cache line is read before it is written), and
// this, not the few selected rows, is what the backward of the gather spends its time on. The
// pass needs the inverse of the index, built serially first (B*S int32, B*K int32).
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif


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

// Serial: a parallel region costs more to start (~0.1 ms once its threads sleep) than this loop.
bool indices_in_range(const Index &idx, int64_t n, int64_t S) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = idx(i);
    if (v < 0 || v >= S) return false;
  }
  return true;
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

// The inverse of an in-range index: for row i = b*S + s of the (B,S,C) tensor, first[i] is the
// smallest r = b*K + k with idx[r] == s (only k < count[b] when counts are given), -1 if none;
// next[r] is the following such r, -1 at the end (ascending k: sums keep the order of a serial loop).
struct InverseIndex {
  std::vector<int32_t> first, next;
  InverseIndex(const Index &idx, int64_t B, int64_t S, int64_t K, const std::vector<int64_t> *count)
      : first(B * S, -1), next(B * K, -1) {
    for (int64_t r = B * K - 1; r >= 0; --r) {
      const int64_t b = r / K;
      if (count != nullptr && r % K >= (*count)[b]) continue;
      int32_t &head = first[b * S + idx(r)];
      next[r] = head;
      head = static_cast<int32_t>(r);
    }
  }
};

// dst[0:C] = src[0:C], or zeros when src is null, bypassing the cache where the CPU allows it.
inline void write_row(float *dst, const float *src, int64_t C) {
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0 && C % 4 == 0) {
    if (src == nullptr) {
      const __m128 zero = _mm_setzero_ps();
      for (int64_t c = 0; c < C; c += 4) _mm_stream_ps(dst + c, zero);
    } else {
      for (int64_t c = 0; c < C; c += 4) _mm_stream_ps(dst + c, _mm_loadu_ps(src + c));
    }
    return;
  }
#endif
  if (src == nullptr)
    std::memset(dst, 0, sizeof(float) * C);
  else
    std::memcpy(dst, src, sizeof(float) * C);
}

// Non-temporal stores are weakly ordered: each thread fences its own before the region ends.
inline void finish_writes() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

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
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * K; ++r) write_row(out + r * C, x + ((r / K) * S + idx(r)) * C, C);
    finish_writes();
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
  const InverseIndex inv(idx, B, S, K, nullptr);
  const float *dout = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * S; ++i) {
      int32_t r = inv.first[i];
      float *dst = dx + i * C;
      if (r < 0 || inv.next[r] < 0) {  // not gathered (zeros) or gathered once (a copy)
        write_row(dst, r < 0 ? nullptr : dout + r * C, C);
        continue;
      }
      std::memcpy(dst, dout + r * C, sizeof(float) * C);  // repeated: accumulate in index order
      for (r = inv.next[r]; r >= 0; r = inv.next[r])
        for (int64_t c = 0; c < C; ++c) dst[c] += dout[r * C + c];
    }
    finish_writes();
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
  const InverseIndex inv(idx, B, S, K, &count);
  const float *x = static_cast<const float *>(params[0]);
  const float *rows = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[4]);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B * S; ++i) {
      const int32_t r = inv.first[i];
      write_row(out + i * C, r < 0 ? x + i * C : rows + r * C, C);
    }
    finish_writes();
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
  const InverseIndex inv(idx, B, S, K, &count);
  const float *dout = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *drows = static_cast<float *>(params[6]);
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < B * S; ++i) write_row(dx + i * C, inv.first[i] < 0 ? dout + i * C : nullptr, C);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * K; ++r) {
      const int64_t b = r / K, k = r % K;
      write_row(drows + r * C, k < count[b] ? dout + (b * S + idx(r)) * C : nullptr, C);
    }
    finish_writes();
  }
  return 0;
}
