// The backward recursion behind discounted returns and GAE(lambda), over rows of a rollout
// buffer. One form serves both: with values V (zero for plain returns) and lam (1 for
// plain returns),
//   delta_t = r_t + gamma * next_t - V_t,  next_t = V_{t+1} inside an episode, 0 after
//             termination, next_values_t after truncation or at the end of an unfinished row,
//   A_t = delta_t + gamma * lam * A_{t+1}  (the product term dropped at an episode cut),
// with advantages A and returns A + V. Within a trial (trial_level) an episode end is not
// a cut. Outputs are float32; the scalar kernel computes in double precision, the AVX2 kernel
// in float32: within about 2e-7 of the result's scale at gamma * lam = 0.94, more where
// gamma * lam is near 1 over long rows (8.8e-6 at gamma = 0.999, lam = 1, 1,000 steps).
#pragma once
#include <string>
#include <vector>

#include "rollout_rows.h"

namespace keras_meta {

// values and next_values may be null (read as zeros); advantages may be null (not written).
// Writes every element of the outputs, zeros past each row's length. Thread-safe, no GIL.
void discounted_backward(const RolloutRows& rows, const float* values, const float* next_values, double gamma,
                         double lam, bool trial_level, float* advantages, float* returns);

// discounted_backward runs one of two kernels: "scalar" (portable, double precision), and on
// x86-64 "avx2" (AVX2 + FMA, float32). The best one the CPU has is chosen at load time; tests
// and benchmarks can choose another.
std::vector<std::string> available_backward_kernels();
std::string backward_kernel();
void set_backward_kernel(const std::string& name);  // std::invalid_argument if not available

}  // namespace keras_meta
