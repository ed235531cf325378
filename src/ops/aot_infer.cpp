// C++ shape/type inference of the custom operators, one translation unit linked into both the
// CPU and the CUDA library. MindSpore calls them when the op is built with out_shape=None,
// which MINDIR reload with dynamic shapes needs.
#include <cstdint>
#include <vector>

class AotExtra;           // attributes are not read; forward declaration is enough
enum TypeId : int {};

extern "C" std::vector<int64_t> MSDAForwardInferShape(int *ndims, int64_t **shapes, AotExtra *extra) {
  (void)ndims;
  (void)extra;
  // value (B,S,M,D), locations (B,Q,M,L,P,2) -> (B,Q,M*D)
  const int64_t heads = shapes[0][2], dim = shapes[0][3];
  return {shapes[0][0], shapes[2][1], (heads < 0 || dim < 0) ? -1 : heads * dim};
}

extern "C" TypeId MSDAForwardInferType(std::vector<TypeId> type_ids, AotExtra *extra) {
  (void)extra;
  return type_ids[0];
}

extern "C" std::vector<int64_t> RowGatherInferShape(int *ndims, int64_t **shapes, AotExtra *extra) {
  (void)ndims;
  (void)extra;
  return {shapes[0][0], shapes[1][1], shapes[0][2]};
}

extern "C" TypeId RowGatherInferType(std::vector<TypeId> type_ids, AotExtra *extra) {
  (void)extra;
  return type_ids[0];
}

extern "C" std::vector<int64_t> RowScatterInferShape(int *ndims, int64_t **shapes, AotExtra *extra) {
  (void)ndims;
  (void)extra;
  return {shapes[0][0], shapes[0][1], shapes[0][2]};
}

extern "C" TypeId RowScatterInferType(std::vector<TypeId> type_ids, AotExtra *extra) {
  (void)extra;
  return type_ids[0];
}
