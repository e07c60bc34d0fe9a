// Running work with the GIL released without breaking interpreter exit.
//
// Before Python 3.14, a thread that asks for the GIL back once finalization has begun is
// ended with pthread_exit. Its forced unwind through a noexcept C++ frame (pybind11's
// gil_scoped_release destructor, for one) aborts the process with "terminate called without
// an active exception", so a daemon thread inside a `_core` call at exit used to kill the
// process with code 134. Every GIL-released section goes through `without_gil` instead: an
// atexit hook (run before finalization begins) waits until no thread is inside one, and a
// section that ends after the hook never asks for the GIL again; it parks its thread for
// the moments left before the process ends.
#pragma once
#include <Python.h>

#include <exception>

namespace keras_meta {

namespace gil_detail {
PyThreadState* release();
void reacquire(PyThreadState* state);  // never returns once the exit hook has run
}  // namespace gil_detail

// `body` must not touch Python objects. An exception it throws is rethrown with the GIL held.
template <typename Body>
void without_gil(Body&& body) {
  PyThreadState* state = gil_detail::release();
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  gil_detail::reacquire(state);
  if (error) std::rethrow_exception(error);
}

}  // namespace keras_meta
