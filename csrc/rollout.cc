// Rollout storage for meta-RL: one row per (task, env), `horizon` preallocated steps per
// row. Storage is NumPy-owned so extraction hands out read-only views, never copies.
// Returns and GAE come from discount.h; the NumPy twin in keras_meta/_twin/rollout.py
// follows the same recursion.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "checks.h"
#include "discount.h"
#include "gil.h"
#include "modules.h"

namespace keras_meta {

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

void require_shape(const py::array& a, const std::vector<int64_t>& shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  require(ok, [&] {
    return std::string("Expected `") + name + "` to have shape " + shape_str(shape) + ". Received: " + name +
           ".shape=" + shape_of(a);
  });
}

py::array read_only_view(const py::array& a) {
  py::array view = a.attr("view")();
  view.attr("setflags")(py::arg("write") = false);
  return view;
}

template <typename T>
py::array_t<T, py::array::c_style> zeros(const std::vector<int64_t>& shape) {
  py::array_t<T, py::array::c_style> a(shape);
  std::memset(a.mutable_data(), 0, sizeof(T) * static_cast<size_t>(a.size()));
  return a;
}

class RolloutBuffer {
 public:
  RolloutBuffer(int64_t num_tasks, int64_t num_envs, int64_t horizon, int64_t obs_dim, int64_t action_dim,
                bool discrete, int64_t episodes_per_trial)
      : T_(positive(num_tasks, "num_tasks")),
        E_(positive(num_envs, "num_envs")),
        H_(positive(horizon, "horizon")),
        O_(positive(obs_dim, "obs_dim")),
        A_(discrete ? 1 : positive(action_dim, "action_dim")),
        discrete_(discrete),
        per_trial_(positive(episodes_per_trial, "episodes_per_trial")) {
    // Every array holds at most T * E * H * max(O, A) elements; refuse sizes whose product
    // overflows int64 before any index arithmetic could (NumPy's own message names no argument).
    int64_t total = 0;
    const bool overflow = __builtin_mul_overflow(T_, E_, &total) || __builtin_mul_overflow(total, H_, &total) ||
                          __builtin_mul_overflow(total, std::max(O_, A_), &total) ||
                          __builtin_mul_overflow(total, int64_t{8}, &total);
    require(!overflow, [&] {
      return "Expected num_tasks * num_envs * horizon * max(obs_dim, action_dim) to be a feasible "
             "element count. Received: num_tasks=" +
             std::to_string(T_) + ", num_envs=" + std::to_string(E_) + ", horizon=" + std::to_string(H_) +
             ", obs_dim=" + std::to_string(O_) + ", action_dim=" + std::to_string(A_);
    });
    obs_ = zeros<float>({T_, E_, H_, O_});
    next_obs_ = zeros<float>({T_, E_, H_, O_});
    if (discrete_) {
      act_i_ = zeros<int64_t>({T_, E_, H_});
    } else {
      act_f_ = zeros<float>({T_, E_, H_, A_});
    }
    rew_ = zeros<float>({T_, E_, H_});
    term_ = zeros<bool>({T_, E_, H_});
    trunc_ = zeros<bool>({T_, E_, H_});
    mask_ = zeros<float>({T_, E_, H_});
    episode_ = zeros<int32_t>({T_, E_, H_});
    trial_ = zeros<int32_t>({T_, E_, H_});
    step_ = zeros<int32_t>({T_, E_, H_});
    len_ = zeros<int64_t>({T_, E_});
    cur_episode_.assign(static_cast<size_t>(T_ * E_), 0);
    cur_step_.assign(static_cast<size_t>(T_ * E_), 0);
  }

  void clear() {
    float* mask = mask_.mutable_data();
    int64_t* len = len_.mutable_data();
    writing([&] {
      std::memset(mask, 0, sizeof(float) * static_cast<size_t>(T_ * E_ * H_));
      std::memset(len, 0, sizeof(int64_t) * static_cast<size_t>(T_ * E_));
      std::fill(cur_episode_.begin(), cur_episode_.end(), 0);
      std::fill(cur_step_.begin(), cur_step_.end(), 0);
    });
  }

  // Appends one transition to every valid row of one task (task >= 0, arrays [E, ...]) or of
  // all tasks (task == -1, arrays [T, E, ...]).
  void add(const py::handle& obs_h, const py::handle& act_h, const py::handle& rew_h, const py::handle& term_h,
           const py::handle& trunc_h, const py::handle& next_obs_h, const py::handle& valid_h, int64_t task) {
    require(task >= -1 && task < T_, [&] {
      return "Expected `task` to be -1 (all tasks) or in [0, " + std::to_string(T_) +
             "). Received: task=" + std::to_string(task);
    });
    std::vector<int64_t> rows = task < 0 ? std::vector<int64_t>{T_, E_} : std::vector<int64_t>{E_};
    auto with = [&](int64_t d) { auto s = rows; s.push_back(d); return s; };
    auto obs = exact_array<float>(obs_h, "observations");
    require_shape(obs, with(O_), "observations");
    auto next_obs = exact_array<float>(next_obs_h, "next_observations");
    require_shape(next_obs, with(O_), "next_observations");
    py::array act;
    if (discrete_) {
      act = exact_array<int64_t>(act_h, "actions");
      require_shape(act, rows, "actions");
    } else {
      act = exact_array<float>(act_h, "actions");
      require_shape(act, with(A_), "actions");
    }
    auto rew = exact_array<float>(rew_h, "rewards");
    require_shape(rew, rows, "rewards");
    auto term = exact_array<bool>(term_h, "terminated");
    require_shape(term, rows, "terminated");
    auto trunc = exact_array<bool>(trunc_h, "truncated");
    require_shape(trunc, rows, "truncated");
    py::array_t<bool, py::array::c_style> valid;
    const bool has_valid = !valid_h.is_none();
    if (has_valid) {
      valid = exact_array<bool>(valid_h, "valid");
      require_shape(valid, rows, "valid");
    }
    const int64_t t0 = task < 0 ? 0 : task, nt = task < 0 ? T_ : 1;
    const bool* v = has_valid ? valid.data() : nullptr;
    const float *o = obs.data(), *no = next_obs.data(), *r = rew.data();
    const bool *te = term.data(), *tr = trunc.data();
    const void* a = act.data();
    int64_t* len = len_.mutable_data();
    float *so = obs_.mutable_data(), *sno = next_obs_.mutable_data(), *sr = rew_.mutable_data();
    float* sm = mask_.mutable_data();
    bool *ste = term_.mutable_data(), *str = trunc_.mutable_data();
    int32_t *sep = episode_.mutable_data(), *stri = trial_.mutable_data(), *sst = step_.mutable_data();
    int64_t* sai = discrete_ ? act_i_.mutable_data() : nullptr;
    float* saf = discrete_ ? nullptr : act_f_.mutable_data();
    // The full-row check and the writes it allows happen under one lock: checked apart, two
    // threads could both pass it for a row with one free step and write past the row's end.
    writing([&] {
      for (int64_t k = 0; k < nt * E_; ++k) {
        const int64_t row = t0 * E_ + k;
        if ((v == nullptr || v[k]) && len[row] >= H_) {
          throw py::value_error("Expected at most horizon=" + std::to_string(H_) +
                                " steps per (task, env) row. Received: a step for row (task=" +
                                std::to_string(row / E_) + ", env=" + std::to_string(row % E_) +
                                ") which is full; call clear() or build the buffer with a larger horizon");
        }
      }
      for (int64_t k = 0; k < nt * E_; ++k) {
        if (v != nullptr && !v[k]) continue;
        const int64_t row = t0 * E_ + k;
        const int64_t i = row * H_ + len[row];
        std::memcpy(so + i * O_, o + k * O_, sizeof(float) * O_);
        std::memcpy(sno + i * O_, no + k * O_, sizeof(float) * O_);
        if (discrete_) {
          sai[i] = static_cast<const int64_t*>(a)[k];
        } else {
          std::memcpy(saf + i * A_, static_cast<const float*>(a) + k * A_, sizeof(float) * A_);
        }
        sr[i] = r[k];
        ste[i] = te[k];
        str[i] = tr[k] && !te[k];
        sm[i] = 1.0f;
        sep[i] = cur_episode_[row];
        stri[i] = static_cast<int32_t>(cur_episode_[row] / per_trial_);
        sst[i] = cur_step_[row];
        ++len[row];
        if (te[k] || tr[k]) {
          ++cur_episode_[row];
          cur_step_[row] = 0;
        } else {
          ++cur_step_[row];
        }
      }
    });
  }

  RolloutRows rows() const {
    return {T_ * E_, H_, len_.data(), rew_.data(), term_.data(), trunc_.data(), trial_.data()};
  }

  py::tuple gae(const py::handle& values_h, const py::handle& next_values_h, double gamma, double lam,
                bool trial_level, const py::handle& out_h) const {
    check_discount(gamma, lam);
    auto values = exact_array<float>(values_h, "values");
    require_shape(values, {T_, E_, H_}, "values");
    auto next_values = exact_array<float>(next_values_h, "next_values");
    require_shape(next_values, {T_, E_, H_}, "next_values");
    FloatArray adv, ret;
    if (out_h.is_none()) {
      adv = FloatArray({T_, E_, H_});
      ret = FloatArray({T_, E_, H_});
    } else {
      if (!py::isinstance<py::tuple>(out_h) || py::len(out_h) != 2) {
        throw py::type_error("Expected `out` to be None or a tuple (advantages, returns) of two arrays. Received: out=" +
                             py::repr(out_h).cast<std::string>());
      }
      const auto out = py::reinterpret_borrow<py::tuple>(out_h);
      adv = output_array(out[0], "out[0]", {&values, &next_values});
      ret = output_array(out[1], "out[1]", {&values, &next_values, &adv});
    }
    const float *v = values.data(), *nv = next_values.data();
    float *a = adv.mutable_data(), *r = ret.mutable_data();
    reading([&] { discounted_backward(rows(), v, nv, gamma, lam, trial_level, a, r); });
    return py::make_tuple(adv, ret);
  }

  FloatArray discounted_returns(double gamma, const py::handle& next_values_h, bool trial_level,
                                const py::handle& out_h) const {
    check_discount(gamma, 0.0);
    FloatArray next_values;
    const bool has = !next_values_h.is_none();
    if (has) {
      next_values = exact_array<float>(next_values_h, "next_values");
      require_shape(next_values, {T_, E_, H_}, "next_values");
    }
    FloatArray ret = out_h.is_none() ? FloatArray({T_, E_, H_})
                                     : output_array(out_h, "out", {has ? &next_values : nullptr});
    const float* nv = has ? next_values.data() : nullptr;
    float* r = ret.mutable_data();
    reading([&] { discounted_backward(rows(), nullptr, nv, gamma, 1.0, trial_level, nullptr, r); });
    return ret;
  }

  py::dict data() const {
    py::dict d;
    d["observations"] = read_only_view(obs_);
    d["next_observations"] = read_only_view(next_obs_);
    d["actions"] = read_only_view(discrete_ ? py::array(act_i_) : py::array(act_f_));
    d["rewards"] = read_only_view(rew_);
    d["terminated"] = read_only_view(term_);
    d["truncated"] = read_only_view(trunc_);
    d["masks"] = read_only_view(mask_);
    d["episode_ids"] = read_only_view(episode_);
    d["trial_ids"] = read_only_view(trial_);
    d["episode_steps"] = read_only_view(step_);
    d["lengths"] = read_only_view(len_);
    return d;
  }

  py::tuple shape() const { return py::make_tuple(T_, E_, H_); }
  int64_t obs_dim() const { return O_; }
  int64_t action_dim() const { return A_; }
  bool discrete() const { return discrete_; }
  int64_t episodes_per_trial() const { return per_trial_; }
  int64_t size() const {
    const int64_t* len = len_.data();
    int64_t s = 0;
    reading([&] {
      for (int64_t i = 0; i < T_ * E_; ++i) s += len[i];
    });
    return s;
  }

 private:
  // Many readers (returns, GAE, the length) or one writer (add, clear) per buffer at a time.
  // The mutex is only ever taken with the GIL released, so a thread waiting for it never
  // blocks one that needs the GIL.
  template <typename Body>
  void writing(Body&& body) {
    without_gil([&] {
      std::unique_lock<std::shared_mutex> lock(mutex_);
      body();
    });
  }

  template <typename Body>
  void reading(Body&& body) const {
    without_gil([&] {
      std::shared_lock<std::shared_mutex> lock(mutex_);
      body();
    });
  }

  // Storage the caller passes in, as NumPy's `out=`, so that repeated calls reuse memory instead
  // of allocating (and page-faulting) fresh arrays. It must not overlap the inputs: each step
  // reads values[t + 1] after step t + 1's outputs are written.
  FloatArray output_array(const py::handle& obj, const char* name,
                          std::initializer_list<const FloatArray*> inputs) const {
    FloatArray out = exact_array<float>(obj, name);
    require_shape(out, {T_, E_, H_}, name);
    require(out.writeable(), [&] {
      return std::string("Expected `") + name + "` to be a writable array. Received: a read-only array";
    });
    const float* begin = out.data();
    const float* end = begin + out.size();
    for (const FloatArray* input : inputs) {
      if (input == nullptr) continue;
      const float* other = input->data();
      require(end <= other || other + input->size() <= begin, [&] {
        return std::string("Expected `") + name + "` to share no memory with the inputs or the other output. "
               "Received: an array overlapping one of them";
      });
    }
    return out;
  }

  static void check_discount(double gamma, double lam) {
    require(gamma >= 0.0 && gamma <= 1.0,
            [&] { return "Expected `gamma` to be in [0, 1]. Received: gamma=" + repr_of(gamma); });
    require(lam >= 0.0 && lam <= 1.0, [&] { return "Expected `lam` to be in [0, 1]. Received: lam=" + repr_of(lam); });
  }

  mutable std::shared_mutex mutex_;
  int64_t T_, E_, H_, O_, A_;
  bool discrete_;
  int64_t per_trial_;
  py::array_t<float, py::array::c_style> obs_, next_obs_, act_f_, rew_, mask_;
  py::array_t<int64_t, py::array::c_style> act_i_, len_;
  py::array_t<bool, py::array::c_style> term_, trunc_;
  py::array_t<int32_t, py::array::c_style> episode_, trial_, step_;
  std::vector<int32_t> cur_episode_, cur_step_;
};

}  // namespace

void register_rollout(py::module_& m) {
  py::class_<RolloutBuffer>(m, "RolloutBuffer",
                            "Preallocated per-(task, env) trajectories with discounted returns and GAE(lambda).")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, bool, int64_t>(), py::arg("num_tasks"),
           py::arg("num_envs"), py::arg("horizon"), py::arg("obs_dim"), py::arg("action_dim") = 1,
           py::arg("discrete") = false, py::arg("episodes_per_trial") = 1)
      .def("add", &RolloutBuffer::add, py::arg("observations"), py::arg("actions"), py::arg("rewards"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_observations"), py::arg("valid") = py::none(),
           py::arg("task") = -1,
           "Appends one step to each valid row: arrays [T, E, ...] (task=-1) or [E, ...] for one task.")
      .def("gae", &RolloutBuffer::gae, py::arg("values"), py::arg("next_values"), py::arg("gamma") = 0.99,
           py::arg("lam") = 0.95, py::arg("trial_level") = false, py::arg("out") = py::none(),
           "(advantages, returns) [T, E, H]; bootstraps from next_values on truncation, not on termination. "
           "out: optional (advantages, returns) float32 arrays to write into and return.")
      .def("discounted_returns", &RolloutBuffer::discounted_returns, py::arg("gamma") = 0.99,
           py::arg("next_values") = py::none(), py::arg("trial_level") = false, py::arg("out") = py::none())
      .def("data", &RolloutBuffer::data, "Read-only views of the storage (no copies).")
      .def("clear", &RolloutBuffer::clear)
      .def_property_readonly("shape", &RolloutBuffer::shape)
      .def_property_readonly("obs_dim", &RolloutBuffer::obs_dim)
      .def_property_readonly("action_dim", &RolloutBuffer::action_dim)
      .def_property_readonly("discrete", &RolloutBuffer::discrete)
      .def_property_readonly("episodes_per_trial", &RolloutBuffer::episodes_per_trial)
      .def("__len__", &RolloutBuffer::size);
  // Let the tests and benchmarks run each kernel of discount.h that the CPU has.
  m.def("_backward_kernels", &available_backward_kernels);
  m.def("_backward_kernel", &backward_kernel);
  m.def("_set_backward_kernel", &set_backward_kernel, py::arg("name"));
}

}  // namespace keras_meta
