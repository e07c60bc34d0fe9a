// Each component of the extension registers its bindings here; bindings.cc calls them all.
#pragma once
#include <pybind11/pybind11.h>

namespace keras_meta {
void register_random(pybind11::module_& m);
void register_regression(pybind11::module_& m);
void register_sampler(pybind11::module_& m);
void register_rollout(pybind11::module_& m);
void register_navigation(pybind11::module_& m);
void register_exit_hook();
}  // namespace keras_meta
