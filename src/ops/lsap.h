// Linear sum assignment (minimum-cost bipartite matching) for the Hungarian matcher, header-only
// C++17 host code shared by the CPU kernel (lsap_cpu.cpp) and the host side of the GPU kernel
// (lsap_cuda.cu).
//
// The matcher's targets were computed by scipy.optimize.linear_sum_assignment, and a cost matrix
// of a detector often has exact ties (identical boxes, saturated focal costs, padded queries), so
// "an" optimal assignment is not enough: this must return THE assignment scipy returns. It
// therefore follows the same method as scipy (shortest augmenting paths with dual variables,
// D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 2016) with the
// same conventions wherever they decide between equal-cost alternatives:
//   * a problem with more rows than columns is solved transposed, so the side being augmented is
//     always the shorter one (every row gets a column);
//   * rows are augmented in order 0, 1, ...;
//   * the columns still to be scanned by one search live in an array that starts in DESCENDING
//     order and from which a scanned column is removed by moving the last entry into its slot;
//   * among the columns with the smallest tentative path cost, an unassigned one wins (the last
//     one in scan order if several), else the first one in scan order;
//   * duals and path costs are doubles updated with exactly the same sequence of additions, so
//     rounding (and with it every later comparison) agrees too.
// The equivalence is tested against scipy on thousands of tie-heavy matrices
// (tests/test_lsap_kernel.py).
//
// Non-finite inputs are replaced like np.nan_to_num(nan=1e8, posinf=1e8, neginf=-1e8) before
// solving: every cost is then finite, so a complete assignment always exists and the search
// always terminates (with an infinite entry a search could find no reachable column; with a NaN
// every comparison fails and the result would be arbitrary).
#ifndef FOCUS_DETR_LSAP_H_
#define FOCUS_DETR_LSAP_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace lsap {

// Scratch memory of one solve; kept by the caller and reused across images, since a training
// step solves one problem per image and decoder layer and the sizes hardly change.
struct Workspace {
  std::vector<double> cost;        // the (possibly transposed) problem, rows x cols, row-major
  std::vector<double> u, v;        // duals of rows and columns
  std::vector<double> dist;        // tentative shortest-path cost to each column in one search
  std::vector<int64_t> pred;       // the row a column is reached from on its shortest path
  std::vector<int64_t> col_of_row, row_of_col;
  std::vector<int64_t> unscanned;  // columns not yet finalised by the current search
  std::vector<char> row_seen, col_seen;
};

inline double sanitize(float x) {
  if (std::isnan(x)) return 1e8;
  if (std::isinf(x)) return x > 0 ? 1e8 : -1e8;
  return static_cast<double>(x);
}

namespace detail {

// One Dijkstra-like search from the free row `start` over reduced costs, until it reaches an
// unassigned column; returns that column, or -1 if none is reachable (cannot happen with finite
// costs, guarded anyway so a bug can never turn into an endless loop). On return `dist`,
// `row_seen`, `col_seen` and `pred` describe the search, and *path_cost is the cost of the path.
inline int64_t shortest_path(Workspace &w, int64_t rows, int64_t cols, int64_t start, double *path_cost) {
  const double inf = std::numeric_limits<double>::infinity();
  // raw pointers: the scan below is the solver's whole cost, keep it free of vector indirection
  double *dist = w.dist.data();
  const double *v = w.v.data();
  int64_t *pred = w.pred.data(), *unscanned = w.unscanned.data();
  const int64_t *row_of_col = w.row_of_col.data();
  for (int64_t r = 0; r < rows; ++r) w.row_seen[r] = 0;
  for (int64_t c = 0; c < cols; ++c) {
    w.col_seen[c] = 0;
    dist[c] = inf;
    // descending: for an all-equal matrix this makes row k take column k, the order scipy has
    unscanned[c] = cols - 1 - c;
  }
  int64_t left = cols;
  double reached = 0.0;  // cost of the shortest path to the column finalised last
  int64_t row = start;
  for (;;) {
    w.row_seen[row] = 1;
    const double *cost_row = w.cost.data() + row * cols;
    const double u_row = w.u[row];
    int64_t best_slot = -1;
    double best = inf;
    for (int64_t s = 0; s < left; ++s) {
      const int64_t c = unscanned[s];
      // keep this exact association order: it fixes the rounding, hence the tie pattern
      const double through_row = reached + cost_row[c] - u_row - v[c];
      if (through_row < dist[c]) {
        pred[c] = row;
        dist[c] = through_row;
      }
      const double d = dist[c];
      if (d < best || (d == best && row_of_col[c] < 0)) {
        best = d;
        best_slot = s;
      }
    }
    if (best_slot < 0 || best == inf) return -1;
    reached = best;
    const int64_t col = unscanned[best_slot];
    w.col_seen[col] = 1;
    unscanned[best_slot] = unscanned[--left];
    if (row_of_col[col] < 0) {
      *path_cost = reached;
      return col;
    }
    row = row_of_col[col];
  }
}

}  // namespace detail

// Solves one problem, the first `cols` columns of a rows x cols block of `cost` whose rows are
// `row_stride` floats apart (the matcher's padded GT columns are simply not read).
// Writes query_of_col[c] for c < cols: the row assigned to column c, or -1 when cols > rows
// leaves it unassigned. Returns 0, or 1 if no complete assignment was found.
inline int solve_assignment(const float *cost, int64_t rows, int64_t cols, int64_t row_stride,
                            int32_t *query_of_col, Workspace &w) {
  for (int64_t c = 0; c < cols; ++c) query_of_col[c] = -1;
  if (rows <= 0 || cols <= 0) return 0;
  const bool transposed = cols < rows;
  const int64_t nr = transposed ? cols : rows, nc = transposed ? rows : cols;
  w.cost.resize(nr * nc);
  // the transposed copy also makes the searches read contiguous rows
  for (int64_t q = 0; q < rows; ++q)
    for (int64_t c = 0; c < cols; ++c) {
      const double x = sanitize(cost[q * row_stride + c]);
      if (transposed)
        w.cost[c * nc + q] = x;
      else
        w.cost[q * nc + c] = x;
    }
  w.u.assign(nr, 0.0);
  w.v.assign(nc, 0.0);
  w.dist.resize(nc);
  w.pred.assign(nc, -1);
  w.col_of_row.assign(nr, -1);
  w.row_of_col.assign(nc, -1);
  w.unscanned.resize(nc);
  w.row_seen.resize(nr);
  w.col_seen.resize(nc);

  for (int64_t cur = 0; cur < nr; ++cur) {
    double path_cost = 0.0;
    const int64_t sink = detail::shortest_path(w, nr, nc, cur, &path_cost);
    if (sink < 0) return 1;
    // dual update keeping reduced costs non-negative and zero along the matching
    w.u[cur] += path_cost;
    for (int64_t r = 0; r < nr; ++r)
      if (w.row_seen[r] && r != cur) w.u[r] += path_cost - w.dist[w.col_of_row[r]];
    for (int64_t c = 0; c < nc; ++c)
      if (w.col_seen[c]) w.v[c] -= path_cost - w.dist[c];
    // flip the augmenting path back from the sink to the starting row
    for (int64_t c = sink;;) {
      const int64_t r = w.pred[c];
      w.row_of_col[c] = r;
      const int64_t previous = w.col_of_row[r];
      w.col_of_row[r] = c;
      if (r == cur) break;
      c = previous;
    }
  }
  if (transposed) {  // working rows are the original columns
    for (int64_t c = 0; c < cols; ++c) query_of_col[c] = static_cast<int32_t>(w.col_of_row[c]);
  } else {
    for (int64_t q = 0; q < rows; ++q) query_of_col[w.col_of_row[q]] = static_cast<int32_t>(q);
  }
  return 0;
}

inline int solve_assignment(const float *cost, int64_t rows, int64_t cols, int64_t row_stride,
                            int32_t *query_of_col) {
  Workspace w;
  return solve_assignment(cost, rows, cols, row_stride, query_of_col, w);
}

// num_valid[i] outside [0, M] is clamped into it (like the counts of the token kernels): a
// negative count means "no GT", and a count above M cannot name more columns than exist.
inline int64_t clamp_count(int32_t n, int64_t M) { return n < 0 ? 0 : (n > M ? M : n); }

// Image i of the batched operator: cost (N, Q, M) float32 row-major, matched (N, M) int32; the
// first n = clamp_count(num_valid[i]) columns are solved, padded columns get -1.
inline int solve_image(const float *cost, const int32_t *num_valid, int64_t i, int64_t Q, int64_t M,
                       int32_t *matched, Workspace &w) {
  int32_t *out = matched + i * M;
  for (int64_t c = 0; c < M; ++c) out[c] = -1;
  return solve_assignment(cost + i * Q * M, Q, clamp_count(num_valid[i], M), M, out, w);
}

// The whole batch, serially (the CPU kernel parallelises over images itself); returns the first
// non-zero status of an image, else 0.
inline int solve_batch(const float *cost, const int32_t *num_valid, int64_t N, int64_t Q, int64_t M,
                       int32_t *matched) {
  Workspace w;
  int status = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int s = solve_image(cost, num_valid, i, Q, M, matched, w);
    if (status == 0) status = s;
  }
  return status;
}

// The AOT entry points' argument check, the same for the CPU and the GPU library: cost
// (N, Q, M) float32, num_valid (N,) int32, matched (N, M) int32. Returns 0 and sets N, Q, M;
// 1 for a wrong number, rank or dtype of the parameters; 2 for inconsistent shapes.
inline int check_arguments(int nparam, const int *ndims, int64_t *const *shapes, const char *const *dtypes,
                           int64_t *N, int64_t *Q, int64_t *M) {
  if (nparam != 3 || ndims[0] != 3 || ndims[1] != 1 || ndims[2] != 2) return 1;
  if (std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "int32") != 0 ||
      std::strcmp(dtypes[2], "int32") != 0)
    return 1;
  *N = shapes[0][0];
  *Q = shapes[0][1];
  *M = shapes[0][2];
  if (shapes[1][0] != *N || shapes[2][0] != *N || shapes[2][1] != *M) return 2;
  return 0;
}

}  // namespace lsap

#endif  // FOCUS_DETR_LSAP_H_
