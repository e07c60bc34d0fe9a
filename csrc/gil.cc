#include "gil.h"

#include <pthread.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "modules.h"

namespace keras_meta {

namespace {

struct ExitState {
  std::mutex mutex;
  std::condition_variable left;
  bool exiting = false;
  std::thread::id exit_thread;  // finalizes the interpreter, so it may take the GIL back
  int64_t inside = 0;           // threads between release() and getting the GIL back
};

// Never destroyed: a forked child abandons the parent's (possibly locked) copy for a new one.
ExitState* exit_state = new ExitState();

void on_exit() {
  // With the GIL released, threads that already decided to take it back can do so and leave.
  pybind11::gil_scoped_release release;
  std::unique_lock<std::mutex> lock(exit_state->mutex);
  exit_state->exiting = true;
  exit_state->exit_thread = std::this_thread::get_id();
  exit_state->left.wait(lock, [] { return exit_state->inside == 0; });
}

// A forked child has only the forking thread, which holds the GIL and so is inside no
// section: it starts from a fresh state, as the sections counted in the parent do not exist
// there and their mutex may have been held by one of them.
void before_fork() { exit_state->mutex.lock(); }
void after_fork_in_parent() { exit_state->mutex.unlock(); }
void after_fork_in_child() { exit_state = new ExitState(); }

}  // namespace

namespace gil_detail {

PyThreadState* release() {
  PyThreadState* state = PyEval_SaveThread();
  std::lock_guard<std::mutex> lock(exit_state->mutex);
  ++exit_state->inside;
  return state;
}

void reacquire(PyThreadState* state) {
  {
    std::unique_lock<std::mutex> lock(exit_state->mutex);
    if (exit_state->exiting && std::this_thread::get_id() != exit_state->exit_thread) {
      --exit_state->inside;
      exit_state->left.notify_all();
      lock.unlock();
      for (;;) pause();
    }
  }
  // Still counted as inside, so the exit hook cannot return (and finalization begin) before
  // this thread holds the GIL again.
  PyEval_RestoreThread(state);
  std::lock_guard<std::mutex> lock(exit_state->mutex);
  if (--exit_state->inside == 0) exit_state->left.notify_all();
}

}  // namespace gil_detail

void register_exit_hook() {
  pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
  pybind11::module_::import("atexit").attr("register")(pybind11::cpp_function(on_exit));
}

}  // namespace keras_meta
