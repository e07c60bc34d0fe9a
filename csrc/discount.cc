// The scalar kernel of discount.h's recursion, which walks each row backwards in double
// precision and runs on any CPU, and the choice among the kernels.
#include "discount.h"

#include <atomic>
#include <stdexcept>

#include "discount_steps.h"
#include "discount_vector.h"

#if defined(KERAS_META_X86_KERNELS) && !(defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)))
#error "the x86-64 kernels need GCC or Clang on x86-64"
#endif

namespace keras_meta {

namespace {

void backward_scalar(const RolloutRows& in, const float* values, const float* next_values, double gamma, double lam,
                     bool trial_level, float* advantages, float* returns) {
  for (int64_t row = 0; row < in.rows; ++row) {
    backward_steps(in, row, 0, in.lengths[row], values, next_values, gamma, lam, trial_level, 0.0, advantages,
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
