// Regression task families. Each task draws its parameters from stream 0 and its inputs
// from stream 1 of the Philox generator keyed by the batch seed, item = task index.
#include <cmath>
#include <tuple>

#include "checks.h"
#include "modules.h"
#include "philox.h"

namespace keras_meta {

namespace {

constexpr uint32_t kParamStream = 0, kInputStream = 1;

float lerp(float low, float high, float unit) { return low + (high - low) * unit; }

using Range = std::pair<double, double>;
using Batch = std::tuple<py::array_t<float>, py::array_t<float>, py::array_t<float>>;

struct Sinusoid {
  float amp_low, amp_high, phase_low, phase_high;
  static constexpr int kParams = 2;
  void params(uint64_t seed, uint32_t task, float* p) const {
    p[0] = lerp(amp_low, amp_high, stream_uniform(seed, task, kParamStream, 0));
    p[1] = lerp(phase_low, phase_high, stream_uniform(seed, task, kParamStream, 1));
  }
  float value(const float* p, float x) const {
    return static_cast<float>(static_cast<double>(p[0]) * std::sin(static_cast<double>(x) - p[1]));
  }
};

template <typename Family>
Batch generate(const Family& family, int64_t meta_batch_size, int64_t num_points, uint64_t seed,
               Range x_range) {
  positive(meta_batch_size, "meta_batch_size");
  positive(num_points, "num_points");
  valid_range(x_range.first, x_range.second, "x_range");
  py::array_t<float> params({meta_batch_size, static_cast<int64_t>(Family::kParams)});
  py::array_t<float> x({meta_batch_size, num_points, int64_t{1}});
  py::array_t<float> y({meta_batch_size, num_points, int64_t{1}});
  float* p = params.mutable_data();
  float* xs = x.mutable_data();
  float* ys = y.mutable_data();
  const float x_low = static_cast<float>(x_range.first), x_high = static_cast<float>(x_range.second);
  {
    py::gil_scoped_release release;
    for (int64_t t = 0; t < meta_batch_size; ++t) {
      float* task_params = p + t * Family::kParams;
      family.params(seed, static_cast<uint32_t>(t), task_params);
      for (int64_t j = 0; j < num_points; ++j) {
        const int64_t i = t * num_points + j;
        xs[i] = lerp(x_low, x_high, stream_uniform(seed, static_cast<uint32_t>(t), kInputStream, static_cast<uint32_t>(j)));
        ys[i] = family.value(task_params, xs[i]);
      }
    }
  }
  return {params, x, y};
}

}  // namespace

void register_regression(py::module_& m) {
  m.def("sinusoid",
        [](int64_t meta_batch_size, int64_t num_points, uint64_t seed, Range amplitude, Range phase, Range x_range) {
          valid_range(amplitude.first, amplitude.second, "amplitude");
          valid_range(phase.first, phase.second, "phase");
          return generate(Sinusoid{static_cast<float>(amplitude.first), static_cast<float>(amplitude.second),
                                   static_cast<float>(phase.first), static_cast<float>(phase.second)},
                          meta_batch_size, num_points, seed, x_range);
        },
        py::arg("meta_batch_size"), py::arg("num_points"), py::arg("seed"), py::arg("amplitude") = Range{0.1, 5.0},
        py::arg("phase") = Range{0.0, M_PI}, py::arg("x_range") = Range{-5.0, 5.0},
        "Sinusoid tasks y = A sin(x - phase). Returns (params[B, 2] = (A, phase), x[B, N, 1], y[B, N, 1]).");
}

}  // namespace keras_meta
