"""Fuzz harness for every `keras_meta._core` entry point.

The first input byte picks the entry point; the rest builds its arguments (sizes, dtypes,
shapes, strides, ranges with NaN/inf, seeds, read-only flags). Only the documented Python
exceptions are accepted: TypeError, ValueError and MemoryError. Anything else, a crash, or a
sanitizer report is a finding. `fuzz_concurrent` runs several threads on one object at once
and then checks what concurrent use must keep (whole adds, serial-equal results).

    python fuzz/fuzz_core.py --iterations 2000          # plain NumPy random loop (no atheris)
    python fuzz/fuzz_core.py -atheris_runs=100000       # coverage-guided with atheris
    python fuzz/fuzz_core.py -max_total_time=600 corpus/

`_core` is loaded straight from the installed extension (or from $KERAS_META_CORE), so the
harness does not import TensorFlow.
"""

import glob
import importlib.machinery
import importlib.util
import os
import sys
import threading

import numpy as np

ACCEPTED = (TypeError, ValueError, MemoryError)
MAX_ELEMENTS = 1 << 16  # keeps every allocation small; larger sizes go through validation only


def load_core():
    path = os.environ.get("KERAS_META_CORE")
    if not path:
        for entry in sys.path:
            found = glob.glob(os.path.join(entry or ".", "keras_meta", "_core*.so"))
            if found:
                path = found[0]
                break
    if not path:
        raise SystemExit("keras_meta/_core*.so not found; build it (make build) or set KERAS_META_CORE")
    loader = importlib.machinery.ExtensionFileLoader("keras_meta._core", path)
    spec = importlib.util.spec_from_file_location("keras_meta._core", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


core = load_core()


class Input:
    """Deterministic argument builder over a byte string."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, bits=16, signed=True):
        value = int.from_bytes(bytes(self.byte() for _ in range((bits + 7) // 8)), "little")
        return value - (1 << (bits - 1)) if signed else value

    def choice(self, options):
        return options[self.byte() % len(options)]

    def size(self, small=6):
        kind = self.byte() % 16
        if kind == 0:
            # Only sizes that validation must refuse: a valid huge size would just allocate.
            return self.choice([0, -1, -(2**31), 2**62, 2**63 - 1, 2**64])
        return 1 + kind % small

    def seed(self):
        return self.choice([0, 1, 2**64 - 1, 2**64, -1, 1.5, "1", None, True, np.uint64(7), self.int(64, False)])

    def number(self):
        return self.choice([0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), -float("inf"), 1e30, -1e-30,
                            self.int(16) / 97.0])

    def range(self):
        kind = self.byte() % 8
        if kind == 0:
            return self.choice([(), (1.0,), (1.0, 2.0, 3.0), "ab", None])
        return (self.number(), self.number()) if kind < 3 else tuple(sorted((self.int(8) / 8.0, self.int(8) / 8.0)))

    def array(self, shape, dtype, low=-2, high=2):
        """An array of `shape` (possibly perturbed), `dtype` (possibly wrong), maybe strided or read-only."""
        shape = list(shape)
        kind = self.byte() % 16
        if kind == 0 and shape:
            shape[self.byte() % len(shape)] += self.choice([-1, 1])
        elif kind == 1:
            shape = shape[:-1]
        elif kind == 2:
            shape = shape + [1]
        if kind == 3:
            dtype = self.choice([np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16, object])
        shape = [max(d, 0) for d in shape]
        if int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
            shape = [min(d, 4) for d in shape]
        rng = np.random.default_rng(self.byte())
        if kind == 4:  # a strided view of a larger array
            full = rng.uniform(low, high, shape[:-1] + [2 * shape[-1]] if shape else [2]) if shape else rng.uniform(
                low, high, 2)
            array = (full[..., ::2] if shape else full[::2][0]).astype(dtype, copy=False)
        else:
            array = rng.uniform(low, high, shape).astype(dtype) if dtype is not object else np.empty(shape, object)
        if kind == 5 and array.dtype.kind == "f" and array.size:
            array.flat[self.byte() % array.size] = self.choice([np.nan, np.inf, -np.inf])
        if kind == 6:
            array.setflags(write=False)
        if kind == 7:
            return array.tolist()
        return array


def _small(n, limit=8):
    return n if isinstance(n, int) and 0 < n <= limit else n


def fuzz_random(inp):
    fn = inp.choice([core.philox_uniform, core.derive_seed])
    if fn is core.philox_uniform:
        count = inp.choice([inp.size(small=64), 2**32 + 1])
        return fn(inp.seed(), inp.choice([0, 5, 2**32 - 1, 2**32, -1]), inp.choice([0, 3, 2**32, -2]), count)
    return fn(inp.seed(), inp.seed())


def fuzz_regression(inp):
    fn = inp.choice([core.sinusoid, core.linear, core.polynomial, core.step_function])
    b, n = inp.size(), inp.size(small=32)
    if fn is core.polynomial:
        return fn(b, n, inp.seed(), inp.choice([0, 3, 64, 65, -1, 2**40]), inp.range(), inp.range())
    return fn(b, n, inp.seed(), inp.range(), inp.range(), inp.range())


def _sampler(inp):
    examples, h, w, c = 2 + inp.byte() % 30, 1 + inp.byte() % 5, 1 + inp.byte() % 5, 1 + inp.byte() % 3
    classes = 1 + inp.byte() % 6
    images = inp.array([examples, h, w, c], np.uint8, 0, 255)
    labels = inp.array([examples], np.int64, 0, classes)
    split = inp.array([1 + inp.byte() % classes], np.int64, 0, classes)
    if isinstance(split, np.ndarray) and split.dtype == np.int64 and inp.byte() % 2:
        split = np.unique(split)
    return core.EpisodeSampler(images, labels, split, inp.size(3), inp.size(3), inp.size(3),
                               rotations=bool(inp.byte() % 2), num_threads=inp.choice([0, 1, 2, 3, 65, -1]))


def fuzz_sampler(inp):
    sampler = _sampler(inp)
    batch = inp.size(4)
    for _ in range(1 + inp.byte() % 3):
        if inp.byte() % 2:
            sampler.sample(batch, inp.seed(), num_threads=inp.choice([None, 1, 2, 0, -1, "2", 65]))
        else:
            sampler.episode_indices(batch, inp.seed())
    return (sampler.images, sampler.labels, sampler.split, sampler.num_classes, sampler.image_shape,
            sampler.ways, sampler.shots, sampler.queries, sampler.rotations, sampler.num_threads)


def fuzz_rollout(inp):
    t, e, h, o, a = (1 + inp.byte() % 3 for _ in range(5))
    if inp.byte() % 8 == 0:
        t, e, h, o = inp.size(), inp.size(), inp.size(), inp.size()
    discrete = bool(inp.byte() % 2)
    buffer = core.RolloutBuffer(t, e, h, o, a, discrete, inp.choice([1, 2, 3, 0, -1]))
    a = buffer.action_dim
    for _ in range(inp.byte() % 6):
        op = inp.byte() % 5
        if op < 2:
            task = inp.choice([-1, -1, 0, t - 1, t, -2])
            rows = [t, e] if task == -1 else [e]
            act = inp.array(rows, np.int64, 0, 4) if discrete else inp.array(rows + [a], np.float32)
            valid = None if inp.byte() % 2 else inp.array(rows, np.bool_)
            buffer.add(inp.array(rows + [o], np.float32), act, inp.array(rows, np.float32),
                       inp.array(rows, np.float32) > 1, inp.array(rows, np.float32) > 1,
                       inp.array(rows + [o], np.float32), valid, task)
        elif op == 2:
            values, next_values = inp.array([t, e, h], np.float32), inp.array([t, e, h], np.float32)
            # out=: absent, fresh arrays, or ones aliasing an input or each other.
            out = inp.choice([None, "fresh", "values", "same", "one"])
            if out == "fresh":
                out = (inp.array([t, e, h], np.float32), inp.array([t, e, h], np.float32))
            elif out in ("values", "same"):
                first = inp.array([t, e, h], np.float32)
                out = (first, values if out == "values" else first)
            elif out == "one":
                out = inp.array([t, e, h], np.float32)
            buffer.gae(values, next_values, inp.number(), inp.number(), bool(inp.byte() % 2), out)
        elif op == 3:
            nv = None if inp.byte() % 2 else inp.array([t, e, h], np.float32)
            out = None if inp.byte() % 2 else (nv if inp.byte() % 4 == 0 else inp.array([t, e, h], np.float32))
            buffer.discounted_returns(inp.number(), nv, bool(inp.byte() % 2), out)
        else:
            buffer.clear()
    data = buffer.data()
    return len(buffer), buffer.shape, data["lengths"].sum()


def fuzz_navigation(inp):
    n = inp.size(5)
    nav = core.BatchedNavigation(n, inp.choice([1, 3, 100, 0, -1]), inp.number(), inp.number())
    nav.reset()
    for _ in range(inp.byte() % 8):
        if inp.byte() % 4 == 0:
            nav.set_goals(inp.array([n, 2], np.float32))
        else:
            nav.step(inp.array([n, 2], np.float32))
    return nav.goals(), nav.num_envs, nav.horizon


def _run_together(calls_per_thread):
    """Runs each thread's calls at once on one object; returns each call's result (None when
    it raised an accepted exception) and re-raises anything else."""
    results = [[None] * len(calls) for calls in calls_per_thread]
    errors = []
    start = threading.Barrier(len(calls_per_thread))

    def run(i):
        try:
            start.wait()
            for j, call in enumerate(calls_per_thread[i]):
                try:
                    results[i][j] = call()
                except ACCEPTED:
                    pass
        except BaseException as error:  # re-raised below, in the fuzzing thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls_per_thread))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _buffer_call(inp, buffer, t, e, h, o, a, discrete):
    op = inp.byte() % 6
    if op < 3:
        task = inp.choice([-1, -1, 0, t - 1])
        rows = [t, e] if task == -1 else [e]
        act = inp.array(rows, np.int64, 0, 4) if discrete else inp.array(rows + [a], np.float32)
        valid = None if inp.byte() % 2 else np.asarray(inp.array(rows, np.float32)) > 0
        args = (inp.array(rows + [o], np.float32), act, inp.array(rows, np.float32),
                np.asarray(inp.array(rows, np.float32)) > 1, np.asarray(inp.array(rows, np.float32)) > 1,
                inp.array(rows + [o], np.float32), valid, task)
        return lambda: buffer.add(*args)
    if op == 3:
        values, gamma, lam, trial = inp.array([t, e, h], np.float32), inp.number(), inp.number(), bool(inp.byte() % 2)
        return lambda: buffer.gae(values, values, gamma, lam, trial)
    if op == 4:
        return inp.choice([buffer.clear, lambda: len(buffer), buffer.data])
    gamma = inp.number()
    return lambda: buffer.discounted_returns(gamma)


def _concurrent_buffer(inp, threads):
    t, e, h, a = (1 + inp.byte() % 3 for _ in range(4))
    o = inp.choice([1, 2, 3, 512])  # long copies widen the window in which calls overlap
    discrete = bool(inp.byte() % 2)
    buffer = core.RolloutBuffer(t, e, h, o, a, discrete, 1 + inp.byte() % 2)
    a = buffer.action_dim
    _run_together([[_buffer_call(inp, buffer, t, e, h, o, a, discrete) for _ in range(1 + inp.byte() % 8)]
                   for _ in range(threads)])
    # Each add and clear is whole: a row holds exactly its first `length` steps, never more
    # than the horizon.
    data = buffer.data()
    lengths, masks = data["lengths"], data["masks"]
    steps = np.arange(h)
    if not ((lengths <= h).all() and (masks == (steps < lengths[..., None])).all() and len(buffer) == lengths.sum()):
        raise AssertionError(f"RolloutBuffer state torn by concurrent calls: lengths={lengths.tolist()}")


def _concurrent_navigation(inp, threads):
    n = 1 + inp.byte() % 4
    nav = core.BatchedNavigation(n, inp.choice([1, 3, 100]), 0.1 + inp.byte() / 64, inp.byte() / 256)

    def call():
        op = inp.byte() % 5
        if op < 3:
            actions = inp.array([n, 2], np.float32)
            return lambda: nav.step(actions)
        if op == 3:
            goals = inp.array([n, 2], np.float32)
            return lambda: nav.set_goals(goals)
        return inp.choice([nav.reset, nav.goals])

    _run_together([[call() for _ in range(1 + inp.byte() % 8)] for _ in range(threads)])
    if nav.goals().shape != (n, 2) or nav.reset().shape != (n, 2):
        raise AssertionError("BatchedNavigation returned a misshaped array after concurrent calls")


def _concurrent_pure(inp, threads):
    """The sampler and the generators keep no state: every concurrent result equals a serial one."""
    sampler = _sampler(inp)

    def call():
        batch, seed = inp.size(4), inp.seed()
        kind = inp.byte() % 5
        if kind == 0:
            num_threads = inp.choice([None, 1, 2, 3])
            return lambda: sampler.sample(batch, seed, num_threads=num_threads)
        if kind == 1:
            return lambda: sampler.episode_indices(batch, seed)
        if kind == 2:
            return lambda: core.philox_uniform(seed, 1, 2, 1 + batch * 100)
        family = inp.choice([core.sinusoid, core.linear, core.polynomial, core.step_function])
        return lambda: family(batch, 8, seed)

    calls = [[call() for _ in range(1 + inp.byte() % 4)] for _ in range(threads)]
    together = _run_together(calls)
    for thread_calls, thread_results in zip(calls, together):
        for fn, result in zip(thread_calls, thread_results):
            if result is None:
                continue
            serial = fn()
            for got, want in zip(*((r if isinstance(r, tuple) else (r,)) for r in (result, serial)), strict=True):
                if not np.array_equal(got, want):
                    raise AssertionError("a concurrent result differs from the serial one")


def fuzz_concurrent(inp):
    """Several threads on one `_core` object (or the stateless functions) at once."""
    threads = 2 + inp.byte() % 3
    target = inp.choice([_concurrent_buffer, _concurrent_buffer, _concurrent_navigation, _concurrent_pure])
    target(inp, threads)


TARGETS = [fuzz_random, fuzz_regression, fuzz_sampler, fuzz_rollout, fuzz_navigation, fuzz_concurrent]


def one_input(data):
    inp = Input(data)
    target = TARGETS[inp.byte() % len(TARGETS)]
    try:
        target(inp)
    except ACCEPTED:
        pass


def random_loop(iterations, seed):
    rng = np.random.default_rng(seed)
    for i in range(iterations):
        data = rng.integers(0, 256, int(rng.integers(1, 160)), dtype=np.uint8).tobytes()
        try:
            one_input(data)
        except BaseException:
            print(f"finding at iteration {i}; input bytes: {data.hex()}", file=sys.stderr, flush=True)
            raise
    print(f"fuzz_core: {iterations} random inputs, no findings")


def main(argv):
    if "--iterations" in argv:
        at = argv.index("--iterations")
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        random_loop(int(argv[at + 1]), seed)
        return
    if "--replay" in argv:  # reproduce a finding printed by the random loop
        one_input(bytes.fromhex(argv[argv.index("--replay") + 1]))
        return
    import atheris

    # Python-level coverage of the argument builders guides the search (instrument_all would
    # also instrument NumPy and take minutes).
    for i, target in enumerate(TARGETS):
        TARGETS[i] = atheris.instrument_func(target)
    for name in ("size", "seed", "number", "range", "array", "choice"):
        setattr(Input, name, atheris.instrument_func(getattr(Input, name)))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
