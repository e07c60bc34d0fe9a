// Few-shot episode sampler: N-way, K-shot, Q-query episodes gathered from a labeled uint8
// image array that stays owned by NumPy.
//
// Every episode is a pure function of (seed, episode index), drawn from Philox streams
// keyed by `seed` with item = episode index, so a batch does not depend on the thread
// count or on which thread filled which episode. The NumPy twin in
// keras_meta/_twin/sampler.py reproduces the draws below exactly; change both together.
//
//   stream 0: the episode's classes, a partial forward Fisher-Yates over the class pool
//   stream 1: the examples of each class, draw j * (K + Q) + t for class j, step t
//   stream 2: the order of the support set, a full forward Fisher-Yates (N*K - 1 draws)
//   stream 3: the order of the query set, likewise (N*Q - 1 draws)
//
// A uniform integer in [0, n) is (uint64(bits) * n) >> 32 (Lemire's multiply-shift without
// rejection): its bias, at most n / 2^32, is far below anything an episode can show, and it
// needs no data-dependent loop, so the twin stays vectorised.
#include <algorithm>
#include <cstdlib>
#include <new>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include <unistd.h>

#include "checks.h"
#include "gil.h"
#include "modules.h"
#include "philox.h"

namespace keras_meta {

namespace {

constexpr uint32_t kClassStream = 0, kExampleStream = 1, kSupportStream = 2, kQueryStream = 3;
constexpr int kMaxThreads = 64;

// Consecutive uint32 draws 0, 1, 2, ... of one (seed, item, stream), computing each
// Philox block once for its four lanes.
class Draws {
 public:
  Draws(uint64_t seed, uint32_t item, uint32_t stream) : seed_(seed), item_(item), stream_(stream) {}

  uint32_t next() {
    if (k_ % 4u == 0) block_ = philox4x32({k_ / 4u, item_, stream_, 0u}, seed_);
    return block_[k_++ % 4u];
  }

  uint32_t below(uint32_t n) { return static_cast<uint32_t>((static_cast<uint64_t>(next()) * n) >> 32); }

 private:
  uint64_t seed_;
  uint32_t item_, stream_, k_ = 0;
  Block block_{};
};

// The first `count` steps of a forward Fisher-Yates shuffle of perm[0, n): afterwards
// perm[0, count) is a uniformly random ordered sample without replacement.
void partial_shuffle(int64_t* perm, uint32_t n, uint32_t count, Draws& draws) {
  for (uint32_t t = 0; t < count; ++t) std::swap(perm[t], perm[t + draws.below(n - t)]);
}

// Runs body(i) for i in [0, n) on the calling thread plus up to `threads - 1` workers.
// The caller always takes part, so a call completes even if no worker ever picks it up
// (a forked child, or a failed thread start), and several Python threads can submit
// at once: each call waits only for its own items.
class ThreadPool {
 public:
  void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& body) {
    threads = static_cast<int>(std::min<int64_t>(threads, n));
    if (threads <= 1) {
      for (int64_t i = 0; i < n; ++i) body(i);
      return;
    }
    auto job = std::make_shared<Job>(body, n);
    const int helpers = start_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (int h = 0; h < helpers; ++h) queue_.push_back(job);
    }
    for (int h = 0; h < helpers; ++h) cv_.notify_one();
    job->run();
    job->wait();
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  struct Job {
    Job(const std::function<void(int64_t)>& body, int64_t n) : body(body), n(n) {}

    // A helper that arrives after the caller has returned finds next >= n and never
    // touches `body`, whose captures may be gone by then.
    void run() {
      for (;;) {
        const int64_t i = next.fetch_add(1);
        if (i >= n) return;
        try {
          body(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex);
          if (!error) error = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(mutex);
        if (++done == n) cv.notify_all();
      }
    }

    void wait() {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait(lock, [this] { return done == n; });
    }

    const std::function<void(int64_t)>& body;
    const int64_t n;
    std::atomic<int64_t> next{0};
    std::mutex mutex;
    std::condition_variable cv;
    int64_t done = 0;
    std::exception_ptr error;
  };

  // Returns how many workers exist, at most `wanted`; fewer if the OS refuses threads.
  int start_workers(int wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < wanted) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (const std::exception&) {
        break;
      }
    }
    return std::min<int>(wanted, static_cast<int>(workers_.size()));
  }

  void work() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->run();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
};

// One pool for the process, created on first use and deliberately never destroyed:
// joining idle workers during interpreter shutdown can deadlock, and exit reclaims them.
// A forked child inherits the pool object but not its threads, so it starts a new one.
// Called with the GIL held, which serialises creation.
ThreadPool& shared_pool() {
  static ThreadPool* pool = nullptr;
  static pid_t owner = 0;
  if (pool == nullptr || owner != getpid()) {
    pool = new ThreadPool();
    owner = getpid();
  }
  return *pool;
}

// A fresh C-contiguous array on a 64-byte boundary, owned by a capsule that frees it.
// tf.numpy_function (and so FewShotClassification.as_dataset) wraps such arrays as
// tensors without copying, where NumPy's own allocations, often only 16- or 32-byte
// aligned, are copied: that copy took about as long as sampling the batch.
template <typename T>
py::array_t<T> aligned_array(const std::vector<int64_t>& shape) {
  size_t count = 1;
  for (const int64_t d : shape) count *= static_cast<size_t>(d);
  void* data = nullptr;
  if (posix_memalign(&data, 64, std::max<size_t>(count * sizeof(T), 1)) != 0) throw std::bad_alloc();
  py::capsule owner(data, [](void* p) { std::free(p); });
  return py::array_t<T>(shape, static_cast<T*>(data), owner);
}

int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(hw == 0 ? 1u : hw, 1u, 8u));
}

std::string shape_repr(const py::array& array) {
  std::string out = "(";
  for (py::ssize_t d = 0; d < array.ndim(); ++d) {
    out += std::to_string(array.shape(d));
    if (array.ndim() == 1 || d + 1 < array.ndim()) out += array.ndim() == 1 ? "," : ", ";
  }
  return out + ")";
}

// Copies one uint8 [S, S, C] (or [H, W, C] when rot == 0) image into float32, scaled by
// 1/255 and turned `rot` quarter turns counter-clockwise like np.rot90(image, rot).
// Division, not multiplication by 1/255, so the result is the correctly rounded x/255
// that NumPy's float32 division also gives.
void copy_image(const uint8_t* src, float* dst, int64_t h, int64_t w, int64_t c, int rot) {
  if (rot == 0) {
    const int64_t size = h * w * c;
    for (int64_t i = 0; i < size; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
    return;
  }
  const int64_t s = h;  // square: checked at construction
  for (int64_t i = 0; i < s; ++i) {
    for (int64_t j = 0; j < s; ++j) {
      int64_t si, sj;
      if (rot == 1) {
        si = j, sj = s - 1 - i;
      } else if (rot == 2) {
        si = s - 1 - i, sj = s - 1 - j;
      } else {
        si = s - 1 - j, sj = i;
      }
      const uint8_t* from = src + (si * s + sj) * c;
      float* to = dst + (i * s + j) * c;
      for (int64_t k = 0; k < c; ++k) to[k] = static_cast<float>(from[k]) / 255.0f;
    }
  }
}

class EpisodeSampler {
 public:
  EpisodeSampler(const py::object& images, const py::object& labels, const py::object& split, int64_t ways,
                 int64_t shots, int64_t queries, bool rotations, int64_t num_threads)
      : ways_(positive(ways, "ways")),
        shots_(positive(shots, "shots")),
        queries_(positive(queries, "queries")),
        rotations_(rotations) {
    images_ = exact_array<uint8_t>(images, "images");
    labels_ = exact_array<int64_t>(labels, "labels");
    split_ = exact_array<int64_t>(split, "split");
    num_threads_ = check_threads(num_threads);
    check_shapes();
    index_classes();
    check_episode_fits();
  }

  // Returns (support_x, support_y, query_x, query_y) of `meta_batch_size` episodes.
  py::tuple sample(int64_t meta_batch_size, const py::object& seed_obj, const py::object& num_threads) {
    const int threads = threads_for_call(meta_batch_size, num_threads);
    const uint64_t seed = unsigned_arg(seed_obj, "seed");
    const int64_t b = meta_batch_size, ns = ways_ * shots_, nq = ways_ * queries_;
    auto support_x = aligned_array<float>({b, ns, h_, w_, c_});
    auto support_y = aligned_array<int32_t>({b, ns});
    auto query_x = aligned_array<float>({b, nq, h_, w_, c_});
    auto query_y = aligned_array<int32_t>({b, nq});
    Outputs out{support_x.mutable_data(), support_y.mutable_data(), query_x.mutable_data(), query_y.mutable_data()};
    ThreadPool& pool = shared_pool();
    without_gil([&] { pool.parallel_for(b, threads, [&](int64_t e) { fill_episode(seed, e, out); }); });
    return py::make_tuple(support_x, support_y, query_x, query_y);
  }

  // The example indices, rotations and labels `sample` would gather, without the images.
  py::tuple episode_indices(int64_t meta_batch_size, const py::object& seed_obj) {
    threads_for_call(meta_batch_size, py::none());
    const uint64_t seed = unsigned_arg(seed_obj, "seed");
    const int64_t b = meta_batch_size, ns = ways_ * shots_, nq = ways_ * queries_;
    py::array_t<int64_t> support_index(std::vector<int64_t>{b, ns}), query_index(std::vector<int64_t>{b, nq});
    py::array_t<int32_t> support_rotation(std::vector<int64_t>{b, ns}), query_rotation(std::vector<int64_t>{b, nq});
    py::array_t<int32_t> support_y(std::vector<int64_t>{b, ns}), query_y(std::vector<int64_t>{b, nq});
    int64_t* si = support_index.mutable_data();
    int64_t* qi = query_index.mutable_data();
    int32_t* sr = support_rotation.mutable_data();
    int32_t* qr = query_rotation.mutable_data();
    int32_t* sy = support_y.mutable_data();
    int32_t* qy = query_y.mutable_data();
    without_gil([&] {
      Plan plan;
      for (int64_t e = 0; e < b; ++e) {
        make_plan(seed, e, plan);
        for (int64_t i = 0; i < ns; ++i) {
          const Slot& slot = plan.slots[plan.support_order[i]];
          si[e * ns + i] = slot.example, sr[e * ns + i] = slot.rotation, sy[e * ns + i] = slot.label;
        }
        for (int64_t i = 0; i < nq; ++i) {
          const Slot& slot = plan.slots[ns + plan.query_order[i]];
          qi[e * nq + i] = slot.example, qr[e * nq + i] = slot.rotation, qy[e * nq + i] = slot.label;
        }
      }
    });
    return py::make_tuple(support_index, support_rotation, support_y, query_index, query_rotation, query_y);
  }

  py::array images() const { return images_; }
  py::array labels() const { return labels_; }
  py::array split() const { return split_; }
  int64_t ways() const { return ways_; }
  int64_t shots() const { return shots_; }
  int64_t queries() const { return queries_; }
  bool rotations() const { return rotations_; }
  int num_threads() const { return num_threads_; }
  int64_t num_pool_classes() const { return static_cast<int64_t>(class_start_.size()) * rotation_count(); }
  py::tuple image_shape() const { return py::make_tuple(h_, w_, c_); }

 private:
  struct Slot {
    int64_t example;
    int32_t rotation, label;
  };
  // Per-episode scratch; support slots come first (class j, shot s at j*K + s), then
  // query slots (class j, query q at N*K + j*Q + q).
  struct Plan {
    std::vector<int64_t> class_perm, example_perm, support_order, query_order;
    std::vector<Slot> slots;
  };
  struct Outputs {
    float *support_x;
    int32_t* support_y;
    float* query_x;
    int32_t* query_y;
  };

  int rotation_count() const { return rotations_ ? 4 : 1; }

  static int check_threads(int64_t value) {
    if (value < 0 || value > kMaxThreads) {
      throw py::value_error("Expected `num_threads` to be 0 (automatic) or a positive integer of at most " +
                            std::to_string(kMaxThreads) + ". Received: num_threads=" + std::to_string(value));
    }
    return value == 0 ? default_threads() : static_cast<int>(value);
  }

  int threads_for_call(int64_t meta_batch_size, const py::object& num_threads) const {
    positive(meta_batch_size, "meta_batch_size");
    // Episode indices are uint32 Philox items.
    require(meta_batch_size <= 0x7FFFFFFF, [&] {
      return "Expected `meta_batch_size` to be below 2**31. Received: meta_batch_size=" +
             std::to_string(meta_batch_size);
    });
    if (num_threads.is_none()) return num_threads_;
    if (!py::isinstance<py::int_>(num_threads)) {
      throw py::type_error("Expected `num_threads` to be an integer or None. Received: num_threads=" +
                           py::repr(num_threads).cast<std::string>());
    }
    return check_threads(num_threads.cast<int64_t>());
  }

  void check_shapes() {
    if (images_.ndim() != 4) {
      throw py::value_error("Expected `images` to have rank 4, shape [examples, height, width, channels]. "
                            "Received: images.shape=" + shape_repr(images_));
    }
    if (labels_.ndim() != 1 || labels_.shape(0) != images_.shape(0)) {
      throw py::value_error("Expected `labels` to have shape (" + std::to_string(images_.shape(0)) +
                            ",), one label per image. Received: labels.shape=" + shape_repr(labels_));
    }
    if (split_.ndim() != 1 || split_.shape(0) == 0) {
      throw py::value_error("Expected `split` to be a non-empty 1-D array of class ids. Received: split.shape=" +
                            shape_repr(split_));
    }
    h_ = images_.shape(1), w_ = images_.shape(2), c_ = images_.shape(3);
    require(h_ > 0 && w_ > 0 && c_ > 0, [&] {
      return "Expected `images` to have non-empty images. Received: images.shape=" + shape_repr(images_);
    });
    if (rotations_ && h_ != w_) {
      throw py::value_error("Expected square images when `rotations=True`, since a quarter turn must keep the "
                            "shape. Received: images.shape=" + shape_repr(images_));
    }
    image_size_ = h_ * w_ * c_;
    image_data_ = static_cast<const uint8_t*>(images_.data());
  }

  // Groups example indices by class (ascending within a class) and locates each split class.
  void index_classes() {
    const int64_t n = labels_.shape(0);
    const int64_t* label = static_cast<const int64_t*>(labels_.data());
    for (int64_t i = 0; i < n; ++i) {
      if (label[i] < 0) {
        throw py::value_error("Expected `labels` to be non-negative class ids. Received: labels[" +
                              std::to_string(i) + "]=" + std::to_string(label[i]));
      }
    }
    members_.resize(n);
    std::iota(members_.begin(), members_.end(), int64_t{0});
    std::stable_sort(members_.begin(), members_.end(), [&](int64_t a, int64_t b) { return label[a] < label[b]; });
    std::vector<int64_t> sorted_labels(n);
    for (int64_t i = 0; i < n; ++i) sorted_labels[i] = label[members_[i]];

    const int64_t m = split_.shape(0);
    const int64_t* split = static_cast<const int64_t*>(split_.data());
    std::vector<int64_t> seen(split, split + m);
    std::sort(seen.begin(), seen.end());
    const auto dup = std::adjacent_find(seen.begin(), seen.end());
    if (dup != seen.end()) {
      throw py::value_error("Expected `split` to list distinct class ids. Received: split repeats class " +
                            std::to_string(*dup));
    }
    class_start_.resize(m);
    class_count_.resize(m);
    for (int64_t j = 0; j < m; ++j) {
      const auto range = std::equal_range(sorted_labels.begin(), sorted_labels.end(), split[j]);
      if (range.first == range.second) {
        throw py::value_error("Expected every class in `split` to have examples in `labels`. Received: split[" +
                              std::to_string(j) + "]=" + std::to_string(split[j]) + ", a class with no examples");
      }
      class_start_[j] = range.first - sorted_labels.begin();
      class_count_[j] = range.second - range.first;
    }
  }

  void check_episode_fits() {
    const int64_t pool = num_pool_classes();
    if (ways_ > pool) {
      throw py::value_error("Expected `ways` to be at most the number of classes in the split (" +
                            std::to_string(pool) + (rotations_ ? " with rotations" : "") +
                            "). Received: ways=" + std::to_string(ways_));
    }
    const auto fewest = std::min_element(class_count_.begin(), class_count_.end()) - class_count_.begin();
    // Compared without forming shots + queries, which overflows int64 for huge values.
    if (shots_ > class_count_[fewest] || queries_ > class_count_[fewest] - shots_) {
      const int64_t* split = static_cast<const int64_t*>(split_.data());
      throw py::value_error("Expected `shots + queries` to be at most the number of examples of every class in the "
                            "split; class " + std::to_string(split[fewest]) + " has " +
                            std::to_string(class_count_[fewest]) + ". Received: shots=" + std::to_string(shots_) +
                            ", queries=" + std::to_string(queries_));
    }
    // Every Philox counter of an episode must fit in uint32.
    require(pool < (int64_t{1} << 31) && ways_ * (shots_ + queries_) < (int64_t{1} << 31), [&] {
      return "Expected episodes of fewer than 2**31 examples. Received: ways=" + std::to_string(ways_) +
             ", shots=" + std::to_string(shots_) + ", queries=" + std::to_string(queries_);
    });
  }

  void make_plan(uint64_t seed, int64_t episode, Plan& plan) const {
    const auto item = static_cast<uint32_t>(episode);
    const int64_t per_class = shots_ + queries_, ns = ways_ * shots_, nq = ways_ * queries_;
    const int rot_count = rotation_count();
    const auto pool = static_cast<uint32_t>(num_pool_classes());

    plan.class_perm.resize(pool);
    std::iota(plan.class_perm.begin(), plan.class_perm.end(), int64_t{0});
    Draws class_draws(seed, item, kClassStream);
    partial_shuffle(plan.class_perm.data(), pool, static_cast<uint32_t>(ways_), class_draws);

    plan.slots.resize(ns + nq);
    Draws example_draws(seed, item, kExampleStream);
    for (int64_t j = 0; j < ways_; ++j) {
      const int64_t chosen = plan.class_perm[j];
      const int64_t cls = chosen / rot_count;
      const auto rotation = static_cast<int32_t>(chosen % rot_count);
      const int64_t* members = members_.data() + class_start_[cls];
      const auto count = static_cast<uint32_t>(class_count_[cls]);
      plan.example_perm.resize(count);
      std::iota(plan.example_perm.begin(), plan.example_perm.end(), int64_t{0});
      partial_shuffle(plan.example_perm.data(), count, static_cast<uint32_t>(per_class), example_draws);
      for (int64_t t = 0; t < per_class; ++t) {
        const int64_t slot = t < shots_ ? j * shots_ + t : ns + j * queries_ + (t - shots_);
        plan.slots[slot] = {members[plan.example_perm[t]], rotation, static_cast<int32_t>(j)};
      }
    }
    shuffle_order(plan.support_order, ns, Draws(seed, item, kSupportStream));
    shuffle_order(plan.query_order, nq, Draws(seed, item, kQueryStream));
  }

  static void shuffle_order(std::vector<int64_t>& order, int64_t n, Draws draws) {
    order.resize(n);
    std::iota(order.begin(), order.end(), int64_t{0});
    partial_shuffle(order.data(), static_cast<uint32_t>(n), static_cast<uint32_t>(n - 1), draws);
  }

  void fill_episode(uint64_t seed, int64_t episode, const Outputs& out) const {
    thread_local Plan plan;
    make_plan(seed, episode, plan);
    const int64_t ns = ways_ * shots_, nq = ways_ * queries_;
    for (int64_t i = 0; i < ns; ++i) {
      const Slot& slot = plan.slots[plan.support_order[i]];
      const int64_t at = episode * ns + i;
      copy_image(image_data_ + slot.example * image_size_, out.support_x + at * image_size_, h_, w_, c_, slot.rotation);
      out.support_y[at] = slot.label;
    }
    for (int64_t i = 0; i < nq; ++i) {
      const Slot& slot = plan.slots[ns + plan.query_order[i]];
      const int64_t at = episode * nq + i;
      copy_image(image_data_ + slot.example * image_size_, out.query_x + at * image_size_, h_, w_, c_, slot.rotation);
      out.query_y[at] = slot.label;
    }
  }

  // References keep the caller's arrays alive; the sampler reads images in place.
  py::array images_, labels_, split_;
  int64_t ways_, shots_, queries_;
  bool rotations_;
  int num_threads_ = 1;
  int64_t h_ = 0, w_ = 0, c_ = 0, image_size_ = 0;
  const uint8_t* image_data_ = nullptr;
  std::vector<int64_t> members_;                   // example indices grouped by label
  std::vector<int64_t> class_start_, class_count_;  // per split class, into members_
};

}  // namespace

void register_sampler(py::module_& m) {
  py::class_<EpisodeSampler>(m, "EpisodeSampler", R"doc(
N-way, K-shot, Q-query episode sampler over a labeled uint8 image array.

The arrays are shared, not copied: the sampler keeps references to them and reads the
images in place, so do not modify them while it is in use. Labels are indexed once, at
construction. Batches are a pure function of (seed, episode index) whatever the thread
count; the NumPy twin keras_meta._twin.sampler.EpisodeSampler reproduces them exactly.

Args:
    images: uint8 array [examples, height, width, channels], C-contiguous.
    labels: int64 array [examples] of non-negative class ids.
    split: int64 array of the distinct class ids episodes draw from.
    ways: Classes per episode (N).
    shots: Support examples per class (K).
    queries: Query examples per class (Q).
    rotations: Treat each quarter turn (k = 0..3) of each class as a distinct class
        (Omniglot convention); needs square images.
    num_threads: Worker threads per call; 0 picks min(cores, 8).
)doc")
      .def(py::init<const py::object&, const py::object&, const py::object&, int64_t, int64_t, int64_t, bool,
                    int64_t>(),
           py::arg("images"), py::arg("labels"), py::arg("split"), py::arg("ways"), py::arg("shots"),
           py::arg("queries"), py::arg("rotations") = false, py::arg("num_threads") = 0)
      .def("sample", &EpisodeSampler::sample, py::arg("meta_batch_size"), py::arg("seed"),
           py::arg("num_threads") = py::none(),
           "Returns (support_x [B, N*K, H, W, C] float32 in [0, 1], support_y [B, N*K] int32,\n"
           "query_x [B, N*Q, H, W, C] float32, query_y [B, N*Q] int32). Labels are 0..N-1 in the\n"
           "order the episode drew its classes; support and query are each shuffled.")
      .def("episode_indices", &EpisodeSampler::episode_indices, py::arg("meta_batch_size"), py::arg("seed"),
           "Returns (support_index int64, support_rotation int32, support_y int32, query_index,\n"
           "query_rotation, query_y): what `sample` gathers, each [B, N*K] or [B, N*Q].")
      .def_property_readonly("images", &EpisodeSampler::images)
      .def_property_readonly("labels", &EpisodeSampler::labels)
      .def_property_readonly("split", &EpisodeSampler::split)
      .def_property_readonly("ways", &EpisodeSampler::ways)
      .def_property_readonly("shots", &EpisodeSampler::shots)
      .def_property_readonly("queries", &EpisodeSampler::queries)
      .def_property_readonly("rotations", &EpisodeSampler::rotations)
      .def_property_readonly("num_threads", &EpisodeSampler::num_threads)
      .def_property_readonly("num_classes", &EpisodeSampler::num_pool_classes,
                             "Classes an episode draws from: len(split), times 4 with rotations.")
      .def_property_readonly("image_shape", &EpisodeSampler::image_shape);
}

}  // namespace keras_meta
