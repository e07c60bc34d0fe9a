// Argument validation shared by the bindings. Errors follow the Keras convention
// "Expected ... Received: name=..." and are raised before any work is done.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace keras_meta {

namespace py = pybind11;

template <typename T>
std::string repr_of(const T& value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

inline void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

inline int64_t positive(int64_t value, const char* name) {
  require(value > 0, std::string("Expected `") + name + "` to be a positive integer. Received: " +
                         name + "=" + repr_of(value));
  return value;
}

inline void valid_range(double low, double high, const char* name) {
  require(low <= high, std::string("Expected `") + name + "` to be a (low, high) pair with low <= high. Received: " +
                           name + "=(" + repr_of(low) + ", " + repr_of(high) + ")");
}

inline std::string dtype_name(const py::array& array) { return py::str(array.dtype()).cast<std::string>(); }

// Accepts only a C-contiguous array of exactly dtype T: a silent conversion would copy
// large inputs and hide a caller's mistake.
template <typename T>
py::array_t<T, py::array::c_style> exact_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string("Expected `") + name + "` to be a NumPy array. Received: " + name +
                         " of type " + py::str(py::type::of(obj)).cast<std::string>());
  }
  auto array = py::reinterpret_borrow<py::array>(obj);
  if (!array.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string("Expected `") + name + "` to have dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ". Received: " + name +
                         ".dtype=" + dtype_name(array));
  }
  if (!(array.flags() & py::array::c_style)) {
    throw py::value_error(std::string("Expected `") + name + "` to be C-contiguous. Received: a strided view; "
                          "pass np.ascontiguousarray(" + name + ")");
  }
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(array);
}

}  // namespace keras_meta
