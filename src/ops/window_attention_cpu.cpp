// Swin's window attention core for MindSpore ops.Custom(func_type="aot") on CPU: float32, OpenMP.
//
//   WindowAttentionForward   q, k, v (B_, H, N, 32), bias (H, N, N), mask (W, N, N)
//                            -> out (B_, H, N, 32) = softmax(q k^T + bias + mask[b % W]) v
//   WindowAttentionBackward  q, k, v, bias, mask, dout
//                            -> dq, dk, dv (B_, H, N, 32), dlogits (B_, H, N, N)
//
// q comes scaled; N <= 64 (a 7 x 7 window: 49), head size 32 (every Swin variant). Why: MindSpore
// runs the 49 x 49 products of thousands of windows as batched products that are slow at that
// size, then two broadcast adds and a softmax, each a pass over logits the graph keeps for the
// backward. Here one (window, head) pair at a time stays in the L1 cache: its rows padded to 64
// columns, every product a register-blocked loop over GCC vector types (16 floats: AVX-512 or
// two AVX2 registers, whatever -march gives), and the backward recomputes the softmax instead of
// keeping it. dlogits is returned rather than summed into the bias' gradient here, so that the
// sum over windows (a ReduceSum in the graph) does not depend on the thread count.
#include <cstdint>
#include <cstring>

#include "cpu_float32.h"

namespace {

typedef float vec16 __attribute__((vector_size(64)));
typedef float vec16_unaligned __attribute__((vector_size(64), aligned(4)));

constexpr int kHead = 32;   // head size
constexpr int kWidth = 64;  // padded window length (tokens per window <= kWidth)
constexpr int kBlock = 4;   // rows per register block

// c (rows x W) = a (rows x depth, row stride lda) times b (depth x W, contiguous), W a multiple
// of 16 known at compile time; rows is a multiple of kBlock (a and c padded).
template <int W>
void product(const float *__restrict a, int rows, int depth, int lda, const float *__restrict b, float *__restrict c) {
  constexpr int kVecs = W / 16;
  for (int i = 0; i < rows; i += kBlock) {
    vec16 acc[kBlock][kVecs] = {};
    for (int t = 0; t < depth; ++t) {
      vec16 bt[kVecs];
      for (int u = 0; u < kVecs; ++u) bt[u] = *reinterpret_cast<const vec16_unaligned *>(b + t * W + 16 * u);
      for (int r = 0; r < kBlock; ++r) {
        const float s = a[(i + r) * lda + t];
        for (int u = 0; u < kVecs; ++u) acc[r][u] += s * bt[u];
      }
    }
    for (int r = 0; r < kBlock; ++r)
      for (int u = 0; u < kVecs; ++u) *reinterpret_cast<vec16_unaligned *>(c + (i + r) * W + 16 * u) = acc[r][u];
  }
}

// dst (cols x kWidth, zero-padded columns) = src (n x cols, row stride cols) transposed.
void transpose_padded(const float *__restrict src, int n, int cols, float *__restrict dst) {
  std::memset(dst, 0, sizeof(float) * cols * kWidth);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < cols; ++c) dst[c * kWidth + j] = src[j * cols + c];
}

// One (window, head) pair's buffers, 64-byte aligned, rows padded to a multiple of kBlock.
struct Scratch {
  alignas(64) float q[kWidth * kHead];       // q, rows zero-padded
  alignas(64) float t[kHead * kWidth];       // k or v transposed (head x kWidth)
  alignas(64) float p[kWidth * kWidth];      // softmax weights (padded columns zero)
  alignas(64) float g[kWidth * kWidth];      // gradient of the logits
  alignas(64) float gt[kWidth * kWidth];     // a weight matrix transposed
  alignas(64) float d[kWidth * kHead];       // dout, rows zero-padded
  alignas(64) float o[kWidth * kHead];       // a product's output
};

int padded_rows(int n) { return (n + kBlock - 1) / kBlock * kBlock; }

void copy_padded_rows(const float *src, int n, float *dst) {
  std::memcpy(dst, src, sizeof(float) * n * kHead);
  std::memset(dst + n * kHead, 0, sizeof(float) * (padded_rows(n) - n) * kHead);
}

// s.p = softmax(q k^T + bias + mask) of one pair (s.q holds q padded).
void attention_weights(Scratch &s, const float *k, const float *bias, const float *mask, int n) {
  transpose_padded(k, n, kHead, s.t);
  product<kWidth>(s.q, padded_rows(n), kHead, kHead, s.t, s.p);
  for (int i = 0; i < n; ++i) {
    float *__restrict row = s.p + i * kWidth;
    const float *__restrict brow = bias + i * n, *__restrict mrow = mask + i * n;
#pragma omp simd
    for (int j = 0; j < n; ++j) row[j] = (row[j] + brow[j]) + mrow[j];
    float top = row[0];
#pragma omp simd reduction(max : top)
    for (int j = 1; j < n; ++j) top = row[j] > top ? row[j] : top;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int j = 0; j < n; ++j) {
      row[j] = exp_nonpositive(row[j] - top);
      total += row[j];
    }
    const float inv = 1.0f / total;
#pragma omp simd
    for (int j = 0; j < n; ++j) row[j] *= inv;
    for (int j = n; j < kWidth; ++j) row[j] = 0.0f;
  }
  std::memset(s.p + n * kWidth, 0, sizeof(float) * (padded_rows(n) - n) * kWidth);
}

// out (n x kHead) = a (n x kWidth, padded) times m (n x kHead rows of global memory).
void weights_times(Scratch &s, const float *a, const float *m, int n, float *out) {
  product<kHead>(a, padded_rows(n), n, kWidth, m, s.o);
  std::memcpy(out, s.o, sizeof(float) * n * kHead);
}

// dst (kWidth x kWidth) = src (n x kWidth) transposed, rows >= n of dst zero.
void transpose_square(const float *__restrict src, int n, float *__restrict dst) {
  std::memset(dst, 0, sizeof(float) * kWidth * kWidth);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) dst[j * kWidth + i] = src[i * kWidth + j];
}

// The five inputs both kernels take (q, k, v, bias, mask) and their sizes.
struct Inputs {
  const float *q, *k, *v, *bias, *mask;
  int64_t pairs, heads, windows, block, square;  // block: a pair's n x kHead, square: its n x n
  int n;
};

// Checks the parameter count, that every parameter is float32 and the five inputs' shapes;
// then reads the inputs.
bool read_inputs(int nparam, int expected, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                 Inputs *out) {
  if (nparam != expected) return false;
  for (int t = 0; t < nparam; ++t)
    if (!is_float32(dtypes[t])) return false;
  const int64_t *q = shapes[0];
  if (ndims[0] != 4 || q[3] != kHead || q[2] > kWidth || q[2] < 1) return false;
  for (int t = 1; t < 3; ++t)
    if (!same_shape(ndims[t], shapes[t], 4, q)) return false;
  const int64_t *b = shapes[3], *m = shapes[4];
  if (ndims[3] != 3 || b[0] != q[1] || b[1] != q[2] || b[2] != q[2]) return false;
  if (ndims[4] != 3 || m[0] < 1 || q[0] % m[0] != 0 || m[1] != q[2] || m[2] != q[2]) return false;
  const auto in = [params](int t) { return static_cast<const float *>(params[t]); };
  *out = Inputs{in(0), in(1), in(2), in(3), in(4), q[0] * q[1], q[1], m[0], q[2] * kHead, q[2] * q[2],
                static_cast<int>(q[2])};
  return true;
}

// s.q = q and s.p = the softmax weights of one (window, head) pair; returns the pair's offset
// into the (B_, H, N, kHead) tensors.
int64_t pair_weights(Scratch &s, const Inputs &in, int64_t pair) {
  const int64_t window = pair / in.heads % in.windows, head = pair % in.heads, at = pair * in.block;
  copy_padded_rows(in.q + at, in.n, s.q);
  attention_weights(s, in.k + at, in.bias + head * in.square, in.mask + window * in.square, in.n);
  return at;
}

}  // namespace

extern "C" int WindowAttentionForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  (void)stream;
  (void)extra;
  Inputs in;
  if (!read_inputs(nparam, 6, params, ndims, shapes, dtypes, &in)) return 1;
  float *out = static_cast<float *>(params[5]);
#pragma omp parallel
  {
    Scratch s;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < in.pairs; ++pair) {
      const int64_t at = pair_weights(s, in, pair);
      weights_times(s, s.p, in.v + at, in.n, out + at);
    }
  }
  return 0;
}

extern "C" int WindowAttentionBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                       void *stream, void *extra) {
  (void)stream;
  (void)extra;
  Inputs in;
  if (!read_inputs(nparam, 10, params, ndims, shapes, dtypes, &in) ||
      !same_shape(ndims[5], shapes[5], ndims[0], shapes[0]))
    return 1;
  const float *dout = static_cast<const float *>(params[5]);
  float *dq = static_cast<float *>(params[6]);
  float *dk = static_cast<float *>(params[7]);
  float *dv = static_cast<float *>(params[8]);
  float *dlogits = static_cast<float *>(params[9]);
  const int n = in.n;
#pragma omp parallel
  {
    Scratch s;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < in.pairs; ++pair) {
      const int64_t at = pair_weights(s, in, pair);
      // dv = p^T dout
      copy_padded_rows(dout + at, n, s.d);
      transpose_square(s.p, n, s.gt);
      weights_times(s, s.gt, s.d, n, dv + at);
      // dp = dout v^T, then the softmax's backward: dlogits = p * (dp - rowsum(dp * p))
      transpose_padded(in.v + at, n, kHead, s.t);
      product<kWidth>(s.d, padded_rows(n), kHead, kHead, s.t, s.g);
      float *__restrict gl = dlogits + pair * in.square;
      for (int i = 0; i < n; ++i) {
        float *__restrict grow = s.g + i * kWidth;
        const float *__restrict prow = s.p + i * kWidth;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < n; ++j) dot += grow[j] * prow[j];
#pragma omp simd
        for (int j = 0; j < n; ++j) grow[j] = prow[j] * (grow[j] - dot);
        for (int j = n; j < kWidth; ++j) grow[j] = 0.0f;
        std::memcpy(gl + i * n, grow, sizeof(float) * n);
      }
      std::memset(s.g + n * kWidth, 0, sizeof(float) * (padded_rows(n) - n) * kWidth);
      // dq = dlogits k; dk = dlogits^T q
      weights_times(s, s.g, in.k + at, n, dq + at);
      transpose_square(s.g, n, s.gt);
      weights_times(s, s.gt, s.q, n, dk + at);
    }
  }
  return 0;
}
