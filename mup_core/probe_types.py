"""Names of the probe types, importable without torch (for configuration defaults).

Outside the ``probes`` package on purpose: importing that package loads torch."""

# every registered type, cheapest first
ALL_PROBE_TYPES = (
    "difference_of_means",
    "lda",
    "logistic_regression",
    "attention",
    "softmax",
    "max",
    "last_token",
    "rolling_max",
    "per_token",
    "ema",
    "multimax",
)
LINEAR_PROBE_TYPES = ("difference_of_means", "lda", "logistic_regression")
