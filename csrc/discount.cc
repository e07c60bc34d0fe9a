// Two kernels for the recursion of discount.h. The scalar one walks each row backwards.
// The AVX-512 one, chosen at run time on CPUs that have it, computes eight steps' deltas and
// decay factors at once and solves the recursion inside the vector with a log-step
// (Hillis-Steele) scan, A_t = d_t + c_t A_{t+1} composed over 1, 2 and 4 lanes, so the only
// serial dependence left is one fused multiply-add per eight steps. The scan reorders the
// double-precision sums, which moves results by about 1e-16 relative.
#include "discount.h"

#include <atomic>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KERAS_META_AVX512 1
#include <immintrin.h>
#endif

namespace keras_meta {

namespace {

// Steps [lo, hi) of one row, latest first; returns A_lo (the carry for the steps before).
double backward_scalar_steps(const RolloutRows& in, int64_t row, int64_t lo, int64_t hi, const float* values,
                             const float* next_values, double gamma, double lam, bool trial_level, double carry,
                             float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  for (int64_t t = hi - 1; t >= lo; --t) {
    const int64_t i = base + t;
    const bool last = t == n - 1;
    const bool done = in.terminated[i] || in.truncated[i];
    const bool through = trial_level && done && !last && in.trials[i] == in.trials[i + 1];
    const bool cut = (done || last) && !through;
    const double value = values ? values[i] : 0.0;
    double next;
    if (cut) {
      next = in.terminated[i] || !next_values ? 0.0 : static_cast<double>(next_values[i]);
    } else {
      next = values ? static_cast<double>(values[i + 1]) : 0.0;
    }
    carry = static_cast<double>(in.rewards[i]) + gamma * next - value + (cut ? 0.0 : gamma * lam * carry);
    if (advantages) advantages[i] = static_cast<float>(carry);
    returns[i] = static_cast<float>(carry + value);
  }
  return carry;
}

void zero_tail(const RolloutRows& in, int64_t row, float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  const size_t bytes = sizeof(float) * static_cast<size_t>(in.horizon - n);
  if (advantages) std::memset(advantages + base + n, 0, bytes);
  std::memset(returns + base + n, 0, bytes);
}

void backward_scalar(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                     bool trial_level, float* advantages, float* returns) {
  for (int64_t row = 0; row < in.rows; ++row) {
    backward_scalar_steps(in, row, 0, in.lengths[row], values, next_values, gamma, lam, trial_level, 0.0, advantages,
                          returns);
    zero_tail(in, row, advantages, returns);
  }
}

#ifdef KERAS_META_AVX512
#define KERAS_META_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// Lanes k.. of x followed by k lanes of fill: lane j holds x[j + k] or fill.
#define KERAS_META_SHIFT(x, fill, k) \
  _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(fill), _mm512_castpd_si512(x), k))

KERAS_META_AVX512_TARGET __m512d load8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }

KERAS_META_AVX512_TARGET __mmask8 nonzero8(const bool* p) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return static_cast<__mmask8>(_mm_test_epi8_mask(bytes, bytes));
}

KERAS_META_AVX512_TARGET
void backward_avx512(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                     bool trial_level, float* advantages, float* returns) {
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  const __m512d vgamma = _mm512_set1_pd(gamma), decay = _mm512_set1_pd(gamma * lam);
  for (int64_t row = 0; row < in.rows; ++row) {
    const int64_t n = in.lengths[row], base = row * in.horizon;
    // Blocks of eight cover [0, vec) and never hold the row's last step, so reading step
    // t + 1 stays inside the row; the rest goes through the scalar recursion first.
    const int64_t vec = n > 0 ? (n - 1) / 8 * 8 : 0;
    double carry = backward_scalar_steps(in, row, vec, n, values, next_values, gamma, lam, trial_level, 0.0,
                                         advantages, returns);
    for (int64_t t = vec - 8; t >= 0; t -= 8) {
      const int64_t i = base + t;
      const __mmask8 terminated = nonzero8(in.terminated + i);
      __mmask8 cut = terminated | nonzero8(in.truncated + i);
      if (trial_level) {
        const __m256i trial = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.trials + i));
        const __m256i next_trial = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in.trials + i + 1));
        cut &= static_cast<__mmask8>(~_mm256_cmpeq_epi32_mask(trial, next_trial));
      }
      const __m512d value = values ? load8(values + i) : zero;
      const __m512d following = values ? load8(values + i + 1) : zero;
      const __m512d bootstrap =
          next_values ? _mm512_maskz_mov_pd(static_cast<__mmask8>(~terminated), load8(next_values + i)) : zero;
      const __m512d next = _mm512_mask_blend_pd(cut, following, bootstrap);
      __m512d d = _mm512_fmadd_pd(vgamma, next, _mm512_sub_pd(load8(in.rewards + i), value));
      __m512d c = _mm512_maskz_mov_pd(static_cast<__mmask8>(~cut), decay);
      d = _mm512_fmadd_pd(c, KERAS_META_SHIFT(d, zero, 1), d);
      c = _mm512_mul_pd(c, KERAS_META_SHIFT(c, one, 1));
      d = _mm512_fmadd_pd(c, KERAS_META_SHIFT(d, zero, 2), d);
      c = _mm512_mul_pd(c, KERAS_META_SHIFT(c, one, 2));
      d = _mm512_fmadd_pd(c, KERAS_META_SHIFT(d, zero, 4), d);
      c = _mm512_mul_pd(c, KERAS_META_SHIFT(c, one, 4));
      const __m512d advantage = _mm512_fmadd_pd(c, _mm512_set1_pd(carry), d);
      carry = _mm512_cvtsd_f64(advantage);
      if (advantages) _mm256_storeu_ps(advantages + i, _mm512_cvtpd_ps(advantage));
      _mm256_storeu_ps(returns + i, _mm512_cvtpd_ps(_mm512_add_pd(advantage, value)));
    }
    zero_tail(in, row, advantages, returns);
  }
}

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#else
bool cpu_has_avx512() { return false; }
#endif

std::atomic<bool>& simd_switch() {
  static std::atomic<bool> enabled{cpu_has_avx512()};
  return enabled;
}

}  // namespace

bool simd_backward_enabled() { return simd_switch().load(); }

void set_simd_backward(bool enabled) { simd_switch().store(enabled && cpu_has_avx512()); }

void discounted_backward(const RolloutRows& rows, const float* values, const float* next_values, double gamma,
                         double lam, bool trial_level, float* advantages, float* returns) {
#ifdef KERAS_META_AVX512
  if (simd_backward_enabled()) {
    backward_avx512(rows, values, next_values, gamma, lam, trial_level, advantages, returns);
    return;
  }
#endif
  backward_scalar(rows, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace keras_meta
