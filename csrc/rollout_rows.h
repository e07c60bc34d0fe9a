// The rows of a rollout buffer as the returns/GAE kernels read them. Kept free of standard
// library headers because the vector kernels include it from translation units compiled for
// other instruction sets (see discount_vector.h).
#pragma once
#include <cstdint>

namespace keras_meta {

struct RolloutRows {
  int64_t rows, horizon;
  const int64_t* lengths;  // [rows]
  const float* rewards;    // [rows, horizon], and so on
  const bool *terminated, *truncated;
  const int32_t* trials;  // trial id per step, only read when trial_level
};

}  // namespace keras_meta
