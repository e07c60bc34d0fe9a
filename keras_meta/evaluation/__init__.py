"""Evaluation: the harness over seeds, its report, and the statistics behind every figure."""

from keras_meta.evaluation.harness import Report, SupportSubset, evaluate
from keras_meta.evaluation.stats import confidence_interval, summarize, t_quantile

__all__ = ["Report", "SupportSubset", "confidence_interval", "evaluate", "summarize", "t_quantile"]
