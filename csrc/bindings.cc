#include "modules.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "keras_meta native core: counter-based RNG, task generators, episode sampler, rollout buffers.";
  keras_meta::register_random(m);
  keras_meta::register_regression(m);
  keras_meta::register_sampler(m);
  keras_meta::register_rollout(m);
  keras_meta::register_navigation(m);
  keras_meta::register_exit_hook();
}
