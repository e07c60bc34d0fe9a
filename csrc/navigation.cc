// Batched 2D navigation (Finn et al., 2017, sec. 5.3): a point starts at the origin, moves by
// an action clipped to [-max_action, max_action]^2 and is rewarded by minus its distance to
// its goal. An episode terminates within goal_tolerance of the goal on both axes and is
// truncated after `horizon` steps. Autoreset follows gymnasium's NEXT_STEP mode: the step
// after an episode end ignores its action and returns the reset observation, reward 0.
// Distances are computed in double from float32 positions, exactly as the NumPy twin and the
// gymnasium environment do, so all three agree bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "checks.h"
#include "gil.h"
#include "modules.h"

namespace keras_meta {

namespace {

// Keeps 2 * num_envs (the coordinate count) far from int64 overflow.
constexpr int64_t kMaxEnvs = 0x7FFFFFFF;

// NaN poisons a point until reset; infinite values are fine for actions (they are clipped).
void require_no_nan(const float* data, int64_t count, const char* name, bool finite) {
  for (int64_t i = 0; i < count; ++i) {
    if (std::isnan(data[i]) || (finite && std::isinf(data[i]))) {
      throw py::value_error(std::string("Expected `") + name + "` to be " + (finite ? "finite" : "free of NaN") +
                            ". Received: " + name + ".flat[" + std::to_string(i) + "]=" + repr_of(data[i]));
    }
  }
}

class BatchedNavigation {
 public:
  BatchedNavigation(int64_t num_envs, int64_t horizon, double max_action, double goal_tolerance)
      : n_(at_most(positive(num_envs, "num_envs"), kMaxEnvs, "num_envs", "2**31 - 1")),
        horizon_(positive(horizon, "horizon")),
        max_action_(static_cast<float>(max_action)),
        tol_(static_cast<float>(goal_tolerance)),
        pos_(static_cast<size_t>(2 * n_), 0.0f),
        goal_(static_cast<size_t>(2 * n_), 0.0f),
        steps_(static_cast<size_t>(n_), 0),
        needs_reset_(static_cast<size_t>(n_), 0) {
    require(max_action > 0 && std::isfinite(max_action), [&] {
      return "Expected `max_action` to be a positive finite number. Received: max_action=" + repr_of(max_action);
    });
    require(goal_tolerance >= 0 && !std::isnan(goal_tolerance), [&] {
      return "Expected `goal_tolerance` to be non-negative. Received: goal_tolerance=" + repr_of(goal_tolerance);
    });
  }

  void set_goals(const py::handle& goals_h) {
    auto goals = exact_array<float>(goals_h, "goals");
    require_pairs(goals, "goals");
    require_no_nan(goals.data(), 2 * n_, "goals", /*finite=*/true);
    locked([&] { std::memcpy(goal_.data(), goals.data(), sizeof(float) * 2 * n_); });
  }

  py::array_t<float> goals() {
    py::array_t<float> out({n_, int64_t{2}});
    float* o = out.mutable_data();
    locked([&] { std::memcpy(o, goal_.data(), sizeof(float) * 2 * n_); });
    return out;
  }

  py::array_t<float> reset() {
    py::array_t<float> obs({n_, int64_t{2}});
    float* o = obs.mutable_data();
    locked([&] {
      std::fill(pos_.begin(), pos_.end(), 0.0f);
      std::fill(steps_.begin(), steps_.end(), 0);
      std::fill(needs_reset_.begin(), needs_reset_.end(), 0);
      std::memcpy(o, pos_.data(), sizeof(float) * 2 * n_);
    });
    return obs;
  }

  py::tuple step(const py::handle& actions_h) {
    auto actions = exact_array<float>(actions_h, "actions");
    require_pairs(actions, "actions");
    require_no_nan(actions.data(), 2 * n_, "actions", /*finite=*/false);
    py::array_t<float> obs({n_, int64_t{2}});
    py::array_t<float> rewards(n_);
    py::array_t<bool> terminated(n_), truncated(n_);
    const float* a = actions.data();
    float *o = obs.mutable_data(), *r = rewards.mutable_data();
    bool *te = terminated.mutable_data(), *tr = truncated.mutable_data();
    locked([&] {
      for (int64_t i = 0; i < n_; ++i) {
        float* p = pos_.data() + 2 * i;
        if (needs_reset_[i]) {
          p[0] = p[1] = 0.0f;
          steps_[i] = 0;
          needs_reset_[i] = 0;
          r[i] = 0.0f;
          te[i] = tr[i] = false;
        } else {
          p[0] = p[0] + std::min(std::max(a[2 * i], -max_action_), max_action_);
          p[1] = p[1] + std::min(std::max(a[2 * i + 1], -max_action_), max_action_);
          const float dx = p[0] - goal_[2 * i], dy = p[1] - goal_[2 * i + 1];
          const double d2 = static_cast<double>(dx) * dx + static_cast<double>(dy) * dy;
          r[i] = static_cast<float>(-std::sqrt(d2));
          ++steps_[i];
          te[i] = std::fabs(dx) < tol_ && std::fabs(dy) < tol_;
          tr[i] = !te[i] && steps_[i] >= horizon_;
          needs_reset_[i] = te[i] || tr[i];
        }
        o[2 * i] = p[0];
        o[2 * i + 1] = p[1];
      }
    });
    return py::make_tuple(obs, rewards, terminated, truncated);
  }

  int64_t num_envs() const { return n_; }
  int64_t horizon() const { return horizon_; }

 private:
  // Exactly [N, 2]: a transposed [2, N] or flat [2N] array has the same element count, and
  // reading it as [N, 2] would hand each sub-environment another one's numbers.
  void require_pairs(const py::array& array, const char* name) const {
    require(array.ndim() == 2 && array.shape(0) == n_ && array.shape(1) == 2, [&] {
      std::string shape = "(";
      for (py::ssize_t d = 0; d < array.ndim(); ++d) shape += (d ? ", " : "") + std::to_string(array.shape(d));
      return std::string("Expected `") + name + "` to have shape (" + std::to_string(n_) + ", 2). Received: " + name +
             ".shape=" + shape + (array.ndim() == 1 ? ",)" : ")") +
             (array.ndim() == 2 ? std::string() : " with ndim=" + std::to_string(array.ndim()));
    });
  }

  // Serialises the Python threads that share one environment; the mutex is only ever taken
  // with the GIL released, so a thread waiting for it never blocks one that needs the GIL.
  template <typename Body>
  void locked(Body&& body) {
    without_gil([&] {
      std::lock_guard<std::mutex> lock(mutex_);
      body();
    });
  }

  std::mutex mutex_;
  int64_t n_, horizon_;
  float max_action_, tol_;
  std::vector<float> pos_, goal_;
  std::vector<int64_t> steps_;
  std::vector<uint8_t> needs_reset_;
};

}  // namespace

void register_navigation(py::module_& m) {
  py::class_<BatchedNavigation>(m, "BatchedNavigation",
                                "N independent 2D navigation episodes with NEXT_STEP autoreset.")
      .def(py::init<int64_t, int64_t, double, double>(), py::arg("num_envs"), py::arg("horizon") = 100,
           py::arg("max_action") = 0.1, py::arg("goal_tolerance") = 0.01)
      .def("set_goals", &BatchedNavigation::set_goals, py::arg("goals"), "Goals float32 [N, 2].")
      .def("goals", &BatchedNavigation::goals)
      .def("reset", &BatchedNavigation::reset, "Moves every point to the origin; returns obs [N, 2].")
      .def("step", &BatchedNavigation::step, py::arg("actions"),
           "Returns (obs [N, 2], rewards [N], terminated [N], truncated [N]).")
      .def_property_readonly("num_envs", &BatchedNavigation::num_envs)
      .def_property_readonly("horizon", &BatchedNavigation::horizon);
}

}  // namespace keras_meta
