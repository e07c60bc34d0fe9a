"""Statistics of evaluation figures: the one confidence-interval implementation.

Every reported half-width (the harness's over seeds, `evaluate(steps=...)`'s over tasks)
comes from `confidence_interval`: Student's t with `n - 1` degrees of freedom.
"""

import math

import numpy as np


def _betacf(a, b, x):
    # Lentz's continued fraction for the regularized incomplete beta (Numerical Recipes 6.4).
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x, y):
    # Regularized I_x(a, b) given x and y = 1 - x separately, so y keeps full precision when
    # x rounds to 1 (the t CDF near 0 depends on y = t^2 / (df + t^2) alone).
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_cdf(t, df):
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """Quantile of Student's t distribution with `df` degrees of freedom (bisection on the CDF).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (> 0).

    Returns:
        `t` with `P(T <= t) = p`, to about 1e-12.
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"Expected 0 < p < 1 and df > 0. Received: p={p!r}, df={df!r}")
    lo, hi = -1.0, 1.0
    while _t_cdf(lo, df) > p:
        lo *= 2.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def confidence_interval(values, level=0.95):
    """Mean and half-width of a two-sided Student-t confidence interval.

    `half_width = t_{(1 + level) / 2, n - 1} * s / sqrt(n)` with `s` the sample standard
    deviation (`n - 1` denominator). The t-distribution (not the normal) is used because
    the harness averages over a handful of seeds. With one value the half-width is NaN.

    Args:
        values: Finite numbers (at least one).
        level: Confidence level in (0, 1).

    Returns:
        `(mean, half_width)` as floats.

    Raises:
        ValueError: For an empty input, non-finite values or a level outside (0, 1).

    Example:

    >>> mean, half = confidence_interval([1, 2, 3, 4, 5])
    >>> round(mean, 4), round(half, 4)   # 2.776445 * sqrt(2.5) / sqrt(5)
    (3.0, 1.9632)
    """
    data = np.asarray(values, np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("Expected at least one value. Received: values=[]")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"Expected finite values. Received: values={data.tolist()!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected `level` in (0, 1). Received: level={level!r}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, float("nan")
    sd = float(data.std(ddof=1))
    return mean, t_quantile(0.5 + level / 2.0, data.size - 1) * sd / math.sqrt(data.size)


def summarize(per_task, level=0.95):
    """Means over tasks and their confidence half-widths, as `confidence_interval` computes them.

    Unlike `confidence_interval` it accepts non-finite values (a diverged adaptation
    reports NaN/Inf rather than failing the evaluation), whose half-width is NaN.

    Args:
        per_task: `{name: values}`, one value per task.
        level: Confidence level.

    Returns:
        `{name: mean, name + "_ci95": half-width}`; the half-width is 0 for a single task.
    """
    out = {}
    for name, values in per_task.items():
        data = np.asarray(values, np.float64).reshape(-1)
        if data.size > 1 and np.all(np.isfinite(data)):
            mean, half_width = confidence_interval(data, level)
        else:
            mean = float(data.mean())
            half_width = 0.0 if data.size == 1 else float("nan")
        out[name] = mean
        out[name + "_ci95"] = half_width
    return out
