#include "checks.h"
#include "modules.h"
#include "philox.h"

namespace keras_meta {

void register_random(py::module_& m) {
  m.def("philox_uniform",
        [](uint64_t seed, uint32_t item, uint32_t stream, int64_t count) {
          positive(count, "count");
          py::array_t<float> out(count);
          float* data = out.mutable_data();
          py::gil_scoped_release release;
          for (int64_t k = 0; k < count; ++k) data[k] = stream_uniform(seed, item, stream, static_cast<uint32_t>(k));
          return out;
        },
        py::arg("seed"), py::arg("item"), py::arg("stream"), py::arg("count"),
        "Uniform [0, 1) float32 draws number 0..count-1 of (seed, item, stream).");
  m.def("derive_seed", &derive_seed, py::arg("seed"), py::arg("step"),
        "The seed of training step `step` under run seed `seed` (pure function).");
}

}  // namespace keras_meta
