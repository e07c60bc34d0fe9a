// Argument validation shared by the bindings. Errors follow the Keras convention
// "Expected ... Received: name=..." and are raised before any work is done.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
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

// `message` is a callable that builds the text only on failure, so calls made once per
// environment step or batch do not format (ostream, Python repr) messages they never show.
template <typename Message>
void require(bool ok, Message&& message) {
  if (!ok) throw py::value_error(message());
}

inline int64_t positive(int64_t value, const char* name) {
  require(value > 0, [&] {
    return std::string("Expected `") + name + "` to be a positive integer. Received: " + name + "=" + repr_of(value);
  });
  return value;
}

// Finite bounds only: an infinite bound makes every draw inf or NaN.
inline void valid_range(double low, double high, const char* name) {
  require(std::isfinite(low) && std::isfinite(high) && low <= high, [&] {
    return std::string("Expected `") + name + "` to be a finite (low, high) pair with low <= high. Received: " + name +
           "=(" + repr_of(low) + ", " + repr_of(high) + ")";
  });
}

// An upper bound for sizes that index uint32 Philox counters or would overflow products.
inline int64_t at_most(int64_t value, int64_t limit, const char* name, const char* limit_text) {
  require(value <= limit, [&] {
    return std::string("Expected `") + name + "` to be at most " + limit_text + ". Received: " + name + "=" +
           repr_of(value);
  });
  return value;
}

// A Python integer (not a bool) in [0, 2**bits), for seeds and Philox counters. pybind's own
// unsigned casters reject -1 with a generic "incompatible function arguments" message.
inline uint64_t unsigned_arg(const py::handle& obj, const char* name, int bits = 64) {
  const std::string range = bits == 64 ? "[0, 2**64)" : "[0, 2**" + std::to_string(bits) + ")";
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr())) {
    throw py::type_error(std::string("Expected `") + name + "` to be an integer in " + range + ". Received: " + name +
                         "=" + py::repr(obj).cast<std::string>());
  }
  auto value = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  const unsigned long long result = PyLong_AsUnsignedLongLong(value.ptr());
  const bool failed = result == static_cast<unsigned long long>(-1) && PyErr_Occurred();
  if (failed) PyErr_Clear();
  if (failed || (bits < 64 && (result >> bits) != 0)) {
    throw py::value_error(std::string("Expected `") + name + "` to be an integer in " + range + ". Received: " + name +
                          "=" + py::repr(obj).cast<std::string>());
  }
  return static_cast<uint64_t>(result);
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
