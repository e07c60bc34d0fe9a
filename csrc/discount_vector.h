// The vector kernel of discount.h's recursion, written once over a lane type V and compiled
// per instruction set in its own translation unit (discount_avx2.cc, built with that ISA's
// flags; see CMakeLists.txt). Such units must not define any inline function or template
// with external linkage (the standard library's included): the linker keeps one copy of such
// code for the whole module and may pick the one compiled for an ISA the CPU lacks. Hence the
// anonymous namespaces here and in discount_steps.h, and the lean includes.
//
// Arithmetic is in V::Scalar (float32 for AVX2: eight steps a vector, no conversions, as
// TF-Agents and the PyTorch libraries compute GAE). A block of W steps computes its TD
// errors d and decay factors c at once and solves A_t = d_t + c_t A_{t+1} inside the vector
// with a log-step (Hillis-Steele) scan composed over 1, 2, 4, ... lanes, so the only serial
// dependence left is one fused multiply-add per block.
//
// Most blocks hold no episode end. Their decay factors are the same in every such block, so
// those blocks skip the flag masks, the bootstrap values and the factor updates, and V scans
// them its own way (V::Uncut, from the decay factor once per call; V::scan_uncut), which
// may round differently from scan_block.
//
// V provides: Scalar, kLanes; Vec and Mask types; broadcast, load (float), store (float),
// nonzero (bool flags), any (either of two bool flag blocks set), same (int32 ids,
// elementwise ==), either, and_not (a & ~b), select (mask ? a : b), add, sub, mul, fmadd,
// shift<K> (lane j <- lane j + K, fill past the end), lanes_from (lanes j and above), first
// (lane 0), and Uncut, uncut and scan_uncut (above).
#pragma once
#include "discount_steps.h"
#include "rollout_rows.h"

namespace keras_meta {

void backward_avx2(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                   bool trial_level, float* advantages, float* returns);

namespace {

// One level of the scan, over distance K: A_t += c_t A_{t+K}, and c_t *= c_{t+K}.
template <class V, int K>
inline typename V::Vec add_following(typename V::Vec d, typename V::Vec c) {
  return V::fmadd(c, V::template shift<K>(d, V::broadcast(0)), d);
}

template <class V, int K>
inline typename V::Vec compose_following(typename V::Vec c) {
  return V::mul(c, V::template shift<K>(c, V::broadcast(1)));
}

template <class V, int K = 1>
inline void scan_block(typename V::Vec& d, typename V::Vec& c) {
  if constexpr (K < V::kLanes) {
    d = add_following<V, K>(d, c);
    c = compose_following<V, K>(c);
    scan_block<V, 2 * K>(d, c);
  }
}

// The factors that carry A_{t+W} into a block whose decay factors are all c: c^(W - j) in
// lane j, as scan_block composes them.
template <class V, int K = 1>
inline typename V::Vec carried(typename V::Vec c) {
  if constexpr (K < V::kLanes) {
    return carried<V, 2 * K>(compose_following<V, K>(c));
  } else {
    return c;
  }
}

// values and advantages are not null where kValues and kAdvantages say so: each combination
// is compiled apart, so that the block loop tests neither.
template <class V, bool kValues, bool kAdvantages>
void backward_rows(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                   bool trial_level, float* advantages, float* returns) {
  using Scalar = typename V::Scalar;
  using Vec = typename V::Vec;
  using Mask = typename V::Mask;
  constexpr int64_t W = V::kLanes;
  const Scalar scalar_gamma = static_cast<Scalar>(gamma), scalar_lam = static_cast<Scalar>(lam);
  const Vec zero = V::broadcast(0), vgamma = V::broadcast(scalar_gamma), decay = V::broadcast(scalar_gamma * scalar_lam);
  // Local copies: the intrinsics' stores may alias anything, so fields read through `in`
  // would be reloaded after every store.
  const float* const rewards = in.rewards;
  const bool *const terminated_flags = in.terminated, *const truncated_flags = in.truncated;
  const int32_t* const trials = in.trials;
  const typename V::Uncut uncut = V::uncut(scalar_gamma * scalar_lam);
  const Vec uncut_carried = carried<V>(decay);
  // The block of steps [i, i + W), starting from carry = A_{i+W}; returns A_i. `flagged`: it
  // may hold an episode end. `last` (the row's last block): `ends` marks cuts besides the
  // flags (the row's last step and the lanes past it) and `outside` the lanes past the row,
  // whose TD errors are zeroed so that the data read there cannot leak in, and whose outputs
  // keep what was stored there before.
  auto block = [&](int64_t i, Scalar carry, bool flagged, bool last, Mask ends, Mask outside) {
    const Vec value = kValues ? V::load(values + i) : zero;
    const Vec following = kValues ? V::load(values + i + 1) : zero;
    const Vec reward_less_value = V::sub(V::load(rewards + i), value);
    Vec d, c;
    if (!flagged) {
      d = V::scan_uncut(V::fmadd(vgamma, following, reward_less_value), uncut);
      c = uncut_carried;
    } else {
      const Mask terminated = V::nonzero(terminated_flags + i);
      Mask cut = V::either(terminated, V::nonzero(truncated_flags + i));
      if (trial_level) cut = V::and_not(cut, V::same(trials + i, trials + i + 1));
      cut = V::either(cut, ends);
      const Vec bootstrap = next_values ? V::select(terminated, zero, V::load(next_values + i)) : zero;
      d = V::select(outside, zero, V::fmadd(vgamma, V::select(cut, bootstrap, following), reward_less_value));
      c = V::select(cut, zero, decay);
      scan_block<V>(d, c);
    }
    const Vec advantage = V::fmadd(c, V::broadcast(carry), d);
    if (last) {
      if constexpr (kAdvantages) V::store(advantages + i, V::select(outside, V::load(advantages + i), advantage));
      V::store(returns + i, V::select(outside, V::load(returns + i), V::add(advantage, value)));
    } else {
      if constexpr (kAdvantages) V::store(advantages + i, advantage);
      V::store(returns + i, V::add(advantage, value));
    }
    return V::first(advantage);
  };
  const Mask none = V::lanes_from(W);
  const int64_t size = in.rows * in.horizon;
  // Rows run last to first, so that the whole call walks each array downwards in one stream
  // (1.1-1.2x over rows first to last).
  for (int64_t row = in.rows - 1; row >= 0; --row) {
    const int64_t n = in.lengths[row], base = row * in.horizon;
    // Blocks cover [0, vec) and never hold the row's last step, so reading step t + 1 stays
    // inside the row. The last 1..W steps, [vec, n), are one more block where the storage
    // after them can be read: past this row's length it is zeroed below, and in the rows
    // after it, done already, the block stores back what it loaded. Otherwise (the last row)
    // they go through the scalar recursion. Either way they stay in this function: a call out
    // of the loop cost a fifth of the run time.
    const int64_t vec = n > 0 ? (n - 1) / W * W : 0;
    Scalar carry = 0;
    if (n > 0 && base + vec + W + 1 <= size) {
      const int64_t m = n - vec;
      carry = block(base + vec, carry, true, true, V::lanes_from(m - 1), V::lanes_from(m));
    } else {
      carry = backward_steps(in, row, vec, n, values, next_values, scalar_gamma, scalar_lam, trial_level, carry,
                             advantages, returns);
    }
    for (int64_t t = vec - W; t >= 0; t -= W) {
      const int64_t i = base + t;
      carry = block(i, carry, V::any(terminated_flags + i, truncated_flags + i), false, none, none);
    }
    zero_row_tail(in, row, advantages, returns);
  }
}

template <class V>
void backward_vector(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                     bool trial_level, float* advantages, float* returns) {
  const auto rows = values ? (advantages ? backward_rows<V, true, true> : backward_rows<V, true, false>)
                           : (advantages ? backward_rows<V, false, true> : backward_rows<V, false, false>);
  rows(in, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace
}  // namespace keras_meta
