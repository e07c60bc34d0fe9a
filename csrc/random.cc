#include "checks.h"
#include "gil.h"
#include "modules.h"
#include "philox.h"

namespace keras_meta {

void register_random(py::module_& m) {
  m.def("philox_uniform",
        [](const py::object& seed_obj, const py::object& item_obj, const py::object& stream_obj, int64_t count) {
          const uint64_t seed = unsigned_arg(seed_obj, "seed");
          const auto item = static_cast<uint32_t>(unsigned_arg(item_obj, "item", 32));
          const auto stream = static_cast<uint32_t>(unsigned_arg(stream_obj, "stream", 32));
          positive(count, "count");
          at_most(count, int64_t{1} << 32, "count", "2**32 (draws are numbered by uint32)");
          py::array_t<float> out(count);
          float* data = out.mutable_data();
          without_gil([&] {
            for (int64_t k = 0; k < count; ++k) data[k] = stream_uniform(seed, item, stream, static_cast<uint32_t>(k));
          });
          return out;
        },
        py::arg("seed"), py::arg("item"), py::arg("stream"), py::arg("count"),
        "Uniform [0, 1) float32 draws number 0..count-1 of (seed, item, stream).");
  m.def("derive_seed",
        [](const py::object& seed, const py::object& step) {
          return derive_seed(unsigned_arg(seed, "seed"), unsigned_arg(step, "step"));
        },
        py::arg("seed"), py::arg("step"),
        "The seed of training step `step` under run seed `seed` (pure function).");
}

}  // namespace keras_meta
