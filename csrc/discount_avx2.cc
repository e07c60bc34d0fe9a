// discount_vector.h's kernel on four doubles per step block (AVX2 + FMA). Compiled with
// -mavx2 -mfma; only called when the CPU has both (discount.cc).
#include <immintrin.h>

#include <cstring>

#include "discount_vector.h"

namespace keras_meta {
namespace {

struct Avx2 {
  static constexpr int kLanes = 4;
  using Doubles = __m256d;
  using Mask = __m256d;  // all bits of a lane set where true

  static Doubles broadcast(double x) { return _mm256_set1_pd(x); }
  static Doubles load(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
  static void store(float* p, Doubles x) { _mm_storeu_ps(p, _mm256_cvtpd_ps(x)); }
  static Mask nonzero(const bool* p) {
    int32_t flags;
    std::memcpy(&flags, p, sizeof flags);
    const __m256i wide = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(flags));
    return _mm256_castsi256_pd(_mm256_cmpgt_epi64(wide, _mm256_setzero_si256()));
  }
  static bool any(const bool* a, const bool* b) {
    int32_t x, y;
    std::memcpy(&x, a, sizeof x);
    std::memcpy(&y, b, sizeof y);
    return (x | y) != 0;
  }
  static Mask same(const int32_t* a, const int32_t* b) {
    const __m128i equal = _mm_cmpeq_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    return _mm256_castsi256_pd(_mm256_cvtepi32_epi64(equal));
  }
  static Mask either(Mask a, Mask b) { return _mm256_or_pd(a, b); }
  static Mask and_not(Mask a, Mask b) { return _mm256_andnot_pd(b, a); }
  static Doubles select(Mask m, Doubles a, Doubles b) { return _mm256_blendv_pd(b, a, m); }
  static Doubles add(Doubles a, Doubles b) { return _mm256_add_pd(a, b); }
  static Doubles sub(Doubles a, Doubles b) { return _mm256_sub_pd(a, b); }
  static Doubles mul(Doubles a, Doubles b) { return _mm256_mul_pd(a, b); }
  static Doubles fmadd(Doubles a, Doubles b, Doubles c) { return _mm256_fmadd_pd(a, b, c); }
  template <int K>
  static Doubles shift(Doubles x, Doubles fill) {
    const Doubles upper_then_fill = _mm256_permute2f128_pd(x, fill, 0x21);  // x2 x3 f f
    if constexpr (K == 2) {
      return upper_then_fill;
    } else {
      static_assert(K == 1);
      return _mm256_shuffle_pd(x, upper_then_fill, 0b0101);  // x1 x2 x3 f
    }
  }
  static double first(Doubles x) { return _mm256_cvtsd_f64(x); }
};

}  // namespace

void backward_avx2(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                   bool trial_level, float* advantages, float* returns) {
  backward_vector<Avx2>(in, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace keras_meta
