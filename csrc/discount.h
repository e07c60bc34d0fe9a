// The backward recursion behind discounted returns and GAE(lambda), over rows of a rollout
// buffer. One form serves both: with values V (zero for plain returns) and lam (1 for
// plain returns),
//   delta_t = r_t + gamma * next_t - V_t,  next_t = V_{t+1} inside an episode, 0 after
//             termination, next_values_t after truncation or at the end of an unfinished row,
//   A_t = delta_t + gamma * lam * A_{t+1}  (the product term dropped at an episode cut),
// with advantages A and returns A + V. Within a trial (trial_level) an episode end is not
// a cut. Arithmetic is in double precision; outputs are float32.
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

// values and next_values may be null (read as zeros); advantages may be null (not written).
// Writes every element of the outputs, zeros past each row's length. Thread-safe, no GIL.
void discounted_backward(const RolloutRows& rows, const float* values, const float* next_values, double gamma,
                         double lam, bool trial_level, float* advantages, float* returns);

// Whether discounted_backward runs its AVX-512 kernel (the CPU has it and it was not
// switched off); the scalar kernel is the reference both are tested against.
bool simd_backward_enabled();
void set_simd_backward(bool enabled);

}  // namespace keras_meta
