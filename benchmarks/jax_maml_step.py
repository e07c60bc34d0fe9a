"""An independent JAX implementation of the sinusoid MAML meta-step, for `meta_step.py`.

The issue behind `meta_step.py` measures the library against JAX ("an independent JAX
implementation of the sinusoid workload runs about 2.3x faster than the best hand-written
TF variant"). This is that reference, written the way JAX code usually is: one `jax.jit`
step over the whole meta-batch (`jax.vmap` over tasks), `jax.grad` through the inner loop
(`jax.lax.stop_gradient` on the inner gradients for first order), Adam written out as in
Keras (beta 0.9 / 0.999, epsilon 1e-7). The model is the MAML paper's MLP (1 -> 40 relu ->
40 relu -> 1, Glorot-uniform kernels, zero biases) with MSE; tasks are drawn with NumPy in
Python before each step (amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5], 10 support and
10 query points), as the hand-written TF step draws its batches.

It needs only JAX and NumPy (no TensorFlow, no keras_meta), so it can run from its own
environment:

    python -m venv /tmp/jax && /tmp/jax/bin/pip install jax
    python benchmarks/meta_step.py --quick --jax-python /tmp/jax/bin/python

`meta_step.py` calls it as `python jax_maml_step.py --one CONFIG` and reads the JSON line it
prints (the same fields as its own configurations).
"""

import argparse
import json
import resource
import statistics
import time

import numpy as np


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(cfg):
    """run(num): `num` meta-steps (a jitted step each, tasks drawn with NumPy); returns
    the mean loss once the device is done."""
    import jax
    import jax.numpy as jnp

    inner_lr, inner_steps, mb = cfg["inner_lr"], cfg["inner_steps"], cfg["meta_batch"]
    first_order = cfg["order"] == "first"
    rng = np.random.default_rng(cfg.get("seed", 0))

    def glorot(fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return jnp.asarray(rng.uniform(-limit, limit, (fan_in, fan_out)), jnp.float32)

    sizes = [(1, 40), (40, 40), (40, 1)]
    params = [(glorot(i, o), jnp.zeros(o, jnp.float32)) for i, o in sizes]

    def forward(p, x):
        for k, (w, b) in enumerate(p):
            x = x @ w + b
            if k < len(p) - 1:
                x = jax.nn.relu(x)
        return x

    def mse(p, x, y):
        return jnp.mean((forward(p, x) - y) ** 2)

    def task_loss(p, sx, sy, qx, qy):
        fast = p
        for _ in range(inner_steps):
            grads = jax.grad(mse)(fast, sx, sy)
            if first_order:
                grads = jax.lax.stop_gradient(grads)
            fast = jax.tree_util.tree_map(lambda w, g: w - inner_lr * g, fast, grads)
        return mse(fast, qx, qy)

    def meta_loss(p, sx, sy, qx, qy):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy))

    @jax.jit
    def step(p, m, v, t, sx, sy, qx, qy):
        loss, grads = jax.value_and_grad(meta_loss)(p, sx, sy, qx, qy)
        t = t + 1
        m = jax.tree_util.tree_map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        lr = 1e-3 * jnp.sqrt(1.0 - 0.999 ** t) / (1.0 - 0.9 ** t)
        p = jax.tree_util.tree_map(lambda w, a, b: w - lr * a / (jnp.sqrt(b) + 1e-7), p, m, v)
        return p, m, v, t, loss

    def sample():
        amplitude = rng.uniform(0.1, 5.0, (mb, 1, 1))
        phase = rng.uniform(0.0, np.pi, (mb, 1, 1))
        x = rng.uniform(-5.0, 5.0, (mb, 20, 1))
        y = amplitude * np.sin(x - phase)
        x, y = x.astype(np.float32), y.astype(np.float32)
        return x[:, :10], y[:, :10], x[:, 10:], y[:, 10:]

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = [params, zeros, zeros, jnp.zeros((), jnp.float32)]

    def run(num):
        losses = []
        for _ in range(num):
            *new_state, loss = step(*state, *sample())
            state[:] = new_state
            losses.append(loss)
        return float(np.mean([float(v) for v in jax.block_until_ready(losses)]))

    return run


def run_one(cfg):
    import jax

    run = build(cfg)
    rss_setup = _maxrss_mib()
    n, reps = cfg["steps"], cfg["reps"]
    start = time.perf_counter()
    run(n)
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        loss = run(n)
        times.append((time.perf_counter() - start) / n)
    return {"config": cfg, "device": "CPU", "auto": None, "first_s": first, "sec_per_step": statistics.median(times),
            "times": times, "its": 1.0 / statistics.median(times), "steps_run": n, "loss": loss,
            "rss_setup_mib": rss_setup, "rss_peak_mib": _maxrss_mib(), "jax": jax.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", required=True, help="a meta_step.py configuration, as JSON")
    print(json.dumps(run_one(json.loads(parser.parse_args().one))), flush=True)


if __name__ == "__main__":
    main()
