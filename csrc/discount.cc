// The scalar kernel of discount.h's recursion, which walks each row backwards and is the
// reference for the vector kernels (discount_vector.h), and the choice among them.
#include "discount.h"

#include <atomic>
#include <cstring>
#include <stdexcept>

#include "discount_vector.h"

#if defined(KERAS_META_X86_KERNELS) && !(defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)))
#error "the x86-64 kernels need GCC or Clang on x86-64"
#endif

namespace keras_meta {

double backward_scalar_steps(const RolloutRows& in, int64_t row, int64_t lo, int64_t hi, const float* values,
                             const float* next_values, double gamma, double lam, bool trial_level, double carry,
                             float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  for (int64_t t = hi - 1; t >= lo; --t) {
    const int64_t i = base + t;
    const bool last = t == n - 1;
    const bool done = in.terminated[i] || in.truncated[i];
    const bool through = trial_level && done && !last && in.trials[i] == in.trials[i + 1];
    const bool cut = (done || last) && !through;
    const double value = values ? values[i] : 0.0;
    double next;
    if (cut) {
      next = in.terminated[i] || !next_values ? 0.0 : static_cast<double>(next_values[i]);
    } else {
      next = values ? static_cast<double>(values[i + 1]) : 0.0;
    }
    carry = static_cast<double>(in.rewards[i]) + gamma * next - value + (cut ? 0.0 : gamma * lam * carry);
    if (advantages) advantages[i] = static_cast<float>(carry);
    returns[i] = static_cast<float>(carry + value);
  }
  return carry;
}

void zero_row_tail(const RolloutRows& in, int64_t row, float* advantages, float* returns) {
  const int64_t n = in.lengths[row], base = row * in.horizon;
  const size_t bytes = sizeof(float) * static_cast<size_t>(in.horizon - n);
  if (advantages) std::memset(advantages + base + n, 0, bytes);
  std::memset(returns + base + n, 0, bytes);
}

namespace {

void backward_scalar(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                     bool trial_level, float* advantages, float* returns) {
  for (int64_t row = 0; row < in.rows; ++row) {
    backward_scalar_steps(in, row, 0, in.lengths[row], values, next_values, gamma, lam, trial_level, 0.0, advantages,
                          returns);
    zero_row_tail(in, row, advantages, returns);
  }
}

using Kernel = void (*)(const RolloutRows&, const float*, const float*, double, double, bool, float*, float*);

struct NamedKernel {
  const char* name;
  Kernel run;
  bool (*supported)();
};

// Fastest first. __builtin_cpu_supports also checks that the OS saves the vector registers.
const NamedKernel kKernels[] = {
#ifdef KERAS_META_X86_KERNELS
    {"avx512", backward_avx512,
     [] {
       __builtin_cpu_init();
       return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
     }},
    {"avx2", backward_avx2,
     [] {
       __builtin_cpu_init();
       return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
     }},
#endif
    {"scalar", backward_scalar, [] { return true; }},
};

const NamedKernel* best_kernel() {
  for (const NamedKernel& kernel : kKernels) {
    if (kernel.supported()) return &kernel;
  }
  return nullptr;  // unreachable: the scalar kernel is always supported
}

std::atomic<const NamedKernel*>& current_kernel() {
  static std::atomic<const NamedKernel*> kernel{best_kernel()};
  return kernel;
}

}  // namespace

std::vector<std::string> available_backward_kernels() {
  std::vector<std::string> names;
  for (const NamedKernel& kernel : kKernels) {
    if (kernel.supported()) names.emplace_back(kernel.name);
  }
  return names;
}

std::string backward_kernel() { return current_kernel().load()->name; }

void set_backward_kernel(const std::string& name) {
  for (const NamedKernel& kernel : kKernels) {
    if (name == kernel.name && kernel.supported()) {
      current_kernel().store(&kernel);
      return;
    }
  }
  std::string names;
  for (const std::string& available : available_backward_kernels()) names += (names.empty() ? "" : ", ") + available;
  throw std::invalid_argument("Expected `name` to be one of this CPU's kernels (" + names +
                              "). Received: name='" + name + "'");
}

void discounted_backward(const RolloutRows& rows, const float* values, const float* next_values, double gamma,
                         double lam, bool trial_level, float* advantages, float* returns) {
  current_kernel().load()->run(rows, values, next_values, gamma, lam, trial_level, advantages, returns);
}

}  // namespace keras_meta
