// discount_vector.h's kernel on eight float32 steps per block (AVX2 + FMA). Compiled with
// -mavx2 -mfma; only called when the CPU has both (discount.cc).
#include <immintrin.h>

#include <cstring>

#include "discount_vector.h"

namespace keras_meta {
namespace {

struct Avx2 {
  using Scalar = float;
  static constexpr int kLanes = 8;
  using Vec = __m256;
  using Mask = __m256;  // all bits of a lane set where true

  static Vec broadcast(float x) { return _mm256_set1_ps(x); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec x) { _mm256_storeu_ps(p, x); }
  static Mask nonzero(const bool* p) {
    int64_t flags;
    std::memcpy(&flags, p, sizeof flags);
    const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(flags));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(wide, _mm256_setzero_si256()));
  }
  static bool any(const bool* a, const bool* b) {
    int64_t x, y;
    std::memcpy(&x, a, sizeof x);
    std::memcpy(&y, b, sizeof y);
    return (x | y) != 0;
  }
  static Mask same(const int32_t* a, const int32_t* b) {
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b))));
  }
  static Mask either(Mask a, Mask b) { return _mm256_or_ps(a, b); }
  static Mask and_not(Mask a, Mask b) { return _mm256_andnot_ps(b, a); }
  static Vec select(Mask m, Vec a, Vec b) { return _mm256_blendv_ps(b, a, m); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  template <int K>
  static Vec shift(Vec x, Vec fill) {
    const Vec upper_then_fill = _mm256_permute2f128_ps(x, fill, 0x21);  // x4..x7 f f f f
    if constexpr (K == 4) {
      return upper_then_fill;
    } else {
      static_assert(K == 1 || K == 2);
      // Per 128-bit half, the bytes of (upper_then_fill : x) shifted down by K lanes.
      return _mm256_castsi256_ps(
          _mm256_alignr_epi8(_mm256_castps_si256(upper_then_fill), _mm256_castps_si256(x), 4 * K));
    }
  }
  static Mask lanes_from(int64_t j) {
    return _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8), _mm256_set1_epi32(static_cast<int32_t>(j))));
  }
  // A block whose decay factors are all c, scanned within each 128-bit half first (one-cycle
  // in-lane shifts) and then across the halves: four shuffles instead of scan_block's five.
  struct Uncut {
    Vec c, c2, across;  // c and c^2 in every lane; c^4, c^3, c^2, c in the lower half, 0 above
  };
  static Uncut uncut(float c) {
    return {broadcast(c), broadcast(c * c), _mm256_setr_ps(c * c * c * c, c * c * c, c * c, c, 0, 0, 0, 0)};
  }
  static Vec scan_uncut(Vec d, const Uncut& u) {
    d = fmadd(u.c, _mm256_castsi256_ps(_mm256_srli_si256(_mm256_castps_si256(d), 4)), d);
    d = fmadd(u.c2, _mm256_castsi256_ps(_mm256_srli_si256(_mm256_castps_si256(d), 8)), d);
    const Vec upper_first = _mm256_permute_ps(_mm256_permute2f128_ps(d, d, 0x11), 0);  // lane 4 everywhere
    return fmadd(u.across, upper_first, d);
  }
  static float first(Vec x) { return _mm256_cvtss_f32(x); }
};

}  // namespace

void backward_avx2(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                   bool trial_level, float* advantages, float* returns) {
  backward_vector<Avx2>(in, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace keras_meta
