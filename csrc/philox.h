// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
// Every draw is a pure function of (key, counter), so any element of any batch can be
// regenerated independently: results do not depend on thread count or call order.
#pragma once
#include <array>
#include <cstdint>

namespace keras_meta {

using Block = std::array<uint32_t, 4>;

inline Block philox4x32(Block ctr, uint64_t seed) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<uint32_t>(p0)};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// Uniform in [0, 1) with 24 random bits: exactly representable in float32, so the
// NumPy twin reproduces it bit for bit.
inline float to_unit_float(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// The k-th uint32 of stream `stream` for item `item`: lane k % 4 of block k / 4.
inline uint32_t stream_bits(uint64_t seed, uint32_t item, uint32_t stream, uint32_t k) {
  return philox4x32({k / 4u, item, stream, 0u}, seed)[k % 4u];
}

inline float stream_uniform(uint64_t seed, uint32_t item, uint32_t stream, uint32_t k) {
  return to_unit_float(stream_bits(seed, item, stream, k));
}

// Seed of training step `step` under a run seed: one Philox block in a reserved stream.
inline uint64_t derive_seed(uint64_t seed, uint64_t step) {
  const Block b = philox4x32({static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                              0xFFFFFFFFu, 0x5EEDu},
                             seed);
  return (static_cast<uint64_t>(b[1]) << 32) | b[0];
}

}  // namespace keras_meta
