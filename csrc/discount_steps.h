// discount.h's recursion one step at a time, templated on the arithmetic type: the scalar
// kernel runs it in double, and the vector kernel, in its own precision, runs through it
// the last steps of a row that no storage follows (the last row). Internal linkage, so each
// translation unit keeps its own copy, built for that unit's instruction set (see
// discount_vector.h).
#pragma once
#include <cstring>

#include "rollout_rows.h"

namespace keras_meta {
namespace {

// Steps [lo, hi) of one row, latest first, starting from carry = A_hi; returns A_lo.
template <typename Real>
inline Real backward_steps(const RolloutRows& in, int64_t row, int64_t lo, int64_t hi, const float* values,
                           const float* next_values, Real gamma, Real lam, bool trial_level, Real carry,
                           float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  for (int64_t t = hi - 1; t >= lo; --t) {
    const int64_t i = base + t;
    const bool last = t == n - 1;
    const bool done = in.terminated[i] || in.truncated[i];
    const bool through = trial_level && done && !last && in.trials[i] == in.trials[i + 1];
    const bool cut = (done || last) && !through;
    const Real value = values ? static_cast<Real>(values[i]) : Real(0);
    Real next;
    if (cut) {
      next = in.terminated[i] || !next_values ? Real(0) : static_cast<Real>(next_values[i]);
    } else {
      next = values ? static_cast<Real>(values[i + 1]) : Real(0);
    }
    carry = static_cast<Real>(in.rewards[i]) + gamma * next - value + (cut ? Real(0) : gamma * lam * carry);
    if (advantages) advantages[i] = static_cast<float>(carry);
    returns[i] = static_cast<float>(carry + value);
  }
  return carry;
}

// Zeros past the row's length, which most rows of a full buffer do not have.
inline void zero_row_tail(const RolloutRows& in, int64_t row, float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  if (n == in.horizon) return;
  const size_t bytes = sizeof(float) * static_cast<size_t>(in.horizon - n);
  if (advantages) std::memset(advantages + base + n, 0, bytes);
  std::memset(returns + base + n, 0, bytes);
}

}  // namespace
}  // namespace keras_meta
