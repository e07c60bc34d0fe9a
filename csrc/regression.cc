// Regression task families. Each task draws its parameters from stream 0 and its inputs
// from stream 1 of the Philox generator keyed by the batch seed, item = task index.
#include <cmath>
#include <tuple>

#include "checks.h"
#include "gil.h"
#include "modules.h"
#include "philox.h"

// The NumPy twins round after every operation; a fused multiply-add (which compilers may
// emit on FMA targets) would round once and break bit-exact agreement.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace keras_meta {

namespace {

constexpr uint32_t kParamStream = 0, kInputStream = 1;
// High degrees only overflow float32; the cap keeps a typo from allocating huge batches.
constexpr int64_t kMaxDegree = 64;

float lerp(float low, float high, float unit) { return low + (high - low) * unit; }

using Range = std::pair<double, double>;
using Batch = std::tuple<py::array_t<float>, py::array_t<float>, py::array_t<float>>;

struct Sinusoid {
  float amp_low, amp_high, phase_low, phase_high;
  int num_params() const { return 2; }
  void params(uint64_t seed, uint32_t task, float* p) const {
    p[0] = lerp(amp_low, amp_high, stream_uniform(seed, task, kParamStream, 0));
    p[1] = lerp(phase_low, phase_high, stream_uniform(seed, task, kParamStream, 1));
  }
  float value(const float* p, float x) const {
    return static_cast<float>(static_cast<double>(p[0]) * std::sin(static_cast<double>(x) - p[1]));
  }
};

// y = slope * x + intercept, evaluated in double and rounded once to float.
struct Linear {
  float slope_low, slope_high, intercept_low, intercept_high;
  int num_params() const { return 2; }
  void params(uint64_t seed, uint32_t task, float* p) const {
    p[0] = lerp(slope_low, slope_high, stream_uniform(seed, task, kParamStream, 0));
    p[1] = lerp(intercept_low, intercept_high, stream_uniform(seed, task, kParamStream, 1));
  }
  float value(const float* p, float x) const {
    return static_cast<float>(static_cast<double>(p[0]) * static_cast<double>(x) + static_cast<double>(p[1]));
  }
};

// y = sum_i p[i] x^i for i = 0..degree, by Horner's rule in double.
struct Polynomial {
  int degree;
  float low, high;
  int num_params() const { return degree + 1; }
  void params(uint64_t seed, uint32_t task, float* p) const {
    for (int i = 0; i <= degree; ++i) p[i] = lerp(low, high, stream_uniform(seed, task, kParamStream, i));
  }
  float value(const float* p, float x) const {
    double acc = p[degree];
    for (int i = degree - 1; i >= 0; --i) acc = acc * static_cast<double>(x) + static_cast<double>(p[i]);
    return static_cast<float>(acc);
  }
};

// y = left for x < location, right for x >= location; params (location, left, right).
struct StepFunction {
  float location_low, location_high, level_low, level_high;
  int num_params() const { return 3; }
  void params(uint64_t seed, uint32_t task, float* p) const {
    p[0] = lerp(location_low, location_high, stream_uniform(seed, task, kParamStream, 0));
    p[1] = lerp(level_low, level_high, stream_uniform(seed, task, kParamStream, 1));
    p[2] = lerp(level_low, level_high, stream_uniform(seed, task, kParamStream, 2));
  }
  float value(const float* p, float x) const { return x < p[0] ? p[1] : p[2]; }
};

template <typename Family>
Batch generate(const Family& family, int64_t meta_batch_size, int64_t num_points, uint64_t seed,
               Range x_range) {
  positive(meta_batch_size, "meta_batch_size");
  positive(num_points, "num_points");
  // Tasks and points index uint32 Philox counters: larger values would repeat draws.
  at_most(meta_batch_size, int64_t{1} << 32, "meta_batch_size", "2**32");
  at_most(num_points, int64_t{1} << 32, "num_points", "2**32");
  valid_range(x_range.first, x_range.second, "x_range");
  const int num_params = family.num_params();
  py::array_t<float> params({meta_batch_size, static_cast<int64_t>(num_params)});
  py::array_t<float> x({meta_batch_size, num_points, int64_t{1}});
  py::array_t<float> y({meta_batch_size, num_points, int64_t{1}});
  float* p = params.mutable_data();
  float* xs = x.mutable_data();
  float* ys = y.mutable_data();
  const float x_low = static_cast<float>(x_range.first), x_high = static_cast<float>(x_range.second);
  without_gil([&] {
    for (int64_t t = 0; t < meta_batch_size; ++t) {
      float* task_params = p + t * num_params;
      family.params(seed, static_cast<uint32_t>(t), task_params);
      for (int64_t j = 0; j < num_points; ++j) {
        const int64_t i = t * num_points + j;
        xs[i] = lerp(x_low, x_high, stream_uniform(seed, static_cast<uint32_t>(t), kInputStream, static_cast<uint32_t>(j)));
        ys[i] = family.value(task_params, xs[i]);
      }
    }
  });
  return {params, x, y};
}

}  // namespace

void register_regression(py::module_& m) {
  m.def("sinusoid",
        [](int64_t meta_batch_size, int64_t num_points, const py::object& seed, Range amplitude, Range phase, Range x_range) {
          valid_range(amplitude.first, amplitude.second, "amplitude");
          valid_range(phase.first, phase.second, "phase");
          return generate(Sinusoid{static_cast<float>(amplitude.first), static_cast<float>(amplitude.second),
                                   static_cast<float>(phase.first), static_cast<float>(phase.second)},
                          meta_batch_size, num_points, unsigned_arg(seed, "seed"), x_range);
        },
        py::arg("meta_batch_size"), py::arg("num_points"), py::arg("seed"), py::arg("amplitude") = Range{0.1, 5.0},
        py::arg("phase") = Range{0.0, M_PI}, py::arg("x_range") = Range{-5.0, 5.0},
        "Sinusoid tasks y = A sin(x - phase). Returns (params[B, 2] = (A, phase), x[B, N, 1], y[B, N, 1]).");
  m.def("linear",
        [](int64_t meta_batch_size, int64_t num_points, const py::object& seed, Range slope, Range intercept, Range x_range) {
          valid_range(slope.first, slope.second, "slope");
          valid_range(intercept.first, intercept.second, "intercept");
          return generate(Linear{static_cast<float>(slope.first), static_cast<float>(slope.second),
                                 static_cast<float>(intercept.first), static_cast<float>(intercept.second)},
                          meta_batch_size, num_points, unsigned_arg(seed, "seed"), x_range);
        },
        py::arg("meta_batch_size"), py::arg("num_points"), py::arg("seed"), py::arg("slope") = Range{-3.0, 3.0},
        py::arg("intercept") = Range{-3.0, 3.0}, py::arg("x_range") = Range{-5.0, 5.0},
        "Linear tasks y = slope x + intercept. Returns (params[B, 2] = (slope, intercept), x[B, N, 1], y[B, N, 1]).");
  m.def(
      "polynomial",
      [](int64_t meta_batch_size, int64_t num_points, const py::object& seed, int64_t degree, Range coefficients,
         Range x_range) {
        require(degree >= 0 && degree <= kMaxDegree, [&] {
          return "Expected `degree` to be an integer in [0, " + std::to_string(kMaxDegree) +
                 "]. Received: degree=" + std::to_string(degree);
        });
        valid_range(coefficients.first, coefficients.second, "coefficients");
        return generate(Polynomial{static_cast<int>(degree), static_cast<float>(coefficients.first),
                                   static_cast<float>(coefficients.second)},
                        meta_batch_size, num_points, unsigned_arg(seed, "seed"), x_range);
      },
      py::arg("meta_batch_size"), py::arg("num_points"), py::arg("seed"), py::arg("degree") = 3,
      py::arg("coefficients") = Range{-1.0, 1.0}, py::arg("x_range") = Range{-2.0, 2.0},
      "Polynomial tasks y = sum_i c_i x^i, every c_i ~ U[coefficients]. Returns (params[B, degree + 1] =\n"
      "(c_0, ..., c_degree), x[B, N, 1], y[B, N, 1]).");
  m.def("step_function",
        [](int64_t meta_batch_size, int64_t num_points, const py::object& seed, Range location, Range levels, Range x_range) {
          valid_range(location.first, location.second, "location");
          valid_range(levels.first, levels.second, "levels");
          return generate(StepFunction{static_cast<float>(location.first), static_cast<float>(location.second),
                                       static_cast<float>(levels.first), static_cast<float>(levels.second)},
                          meta_batch_size, num_points, unsigned_arg(seed, "seed"), x_range);
        },
        py::arg("meta_batch_size"), py::arg("num_points"), py::arg("seed"), py::arg("location") = Range{-2.5, 2.5},
        py::arg("levels") = Range{-1.0, 1.0}, py::arg("x_range") = Range{-5.0, 5.0},
        "Step tasks y = left if x < location else right, both levels ~ U[levels]. Returns (params[B, 3] =\n"
        "(location, left, right), x[B, N, 1], y[B, N, 1]).");
}

}  // namespace keras_meta
