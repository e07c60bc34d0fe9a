// discount_vector.h's kernel on eight doubles per step block (AVX-512F/BW/VL/DQ). Compiled
// with those flags; only called when the CPU has them (discount.cc).
#include <immintrin.h>

#include "discount_vector.h"

namespace keras_meta {
namespace {

struct Avx512 {
  static constexpr int kLanes = 8;
  using Doubles = __m512d;
  using Mask = __mmask8;

  static Doubles broadcast(double x) { return _mm512_set1_pd(x); }
  static Doubles load(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
  static void store(float* p, Doubles x) { _mm256_storeu_ps(p, _mm512_cvtpd_ps(x)); }
  static Mask nonzero(const bool* p) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return static_cast<Mask>(_mm_test_epi8_mask(bytes, bytes));
  }
  static bool any(const bool* a, const bool* b) {
    const __m128i either = _mm_or_si128(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a)),
                                        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b)));
    return !_mm_testz_si128(either, either);
  }
  static Mask same(const int32_t* a, const int32_t* b) {
    return _mm256_cmpeq_epi32_mask(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
  }
  static Mask either(Mask a, Mask b) { return static_cast<Mask>(a | b); }
  static Mask and_not(Mask a, Mask b) { return static_cast<Mask>(a & ~b); }
  static Doubles select(Mask m, Doubles a, Doubles b) { return _mm512_mask_blend_pd(m, b, a); }
  static Doubles add(Doubles a, Doubles b) { return _mm512_add_pd(a, b); }
  static Doubles sub(Doubles a, Doubles b) { return _mm512_sub_pd(a, b); }
  static Doubles mul(Doubles a, Doubles b) { return _mm512_mul_pd(a, b); }
  static Doubles fmadd(Doubles a, Doubles b, Doubles c) { return _mm512_fmadd_pd(a, b, c); }
  template <int K>
  static Doubles shift(Doubles x, Doubles fill) {
    return _mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512(fill), _mm512_castpd_si512(x), K));
  }
  static double first(Doubles x) { return _mm512_cvtsd_f64(x); }
};

}  // namespace

void backward_avx512(const RolloutRows& in, const float* values, const float* next_values, double gamma,
                     double lam, bool trial_level, float* advantages, float* returns) {
  backward_vector<Avx512>(in, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace keras_meta
