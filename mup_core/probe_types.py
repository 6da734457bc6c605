"""The one registry of probe types: name -> class, importable without torch (for
configuration defaults); ``mup_core.probes.make_probe`` imports a class when it is used.

Outside the ``probes`` package on purpose: importing that package loads torch."""

# every type, cheapest first
PROBE_CLASSES = {
    "difference_of_means": "mup_core.probes.linear:DifferenceOfMeansProbe",
    "lda": "mup_core.probes.linear:LDAProbe",
    "logistic_regression": "mup_core.probes.linear:LogisticRegressionProbe",
    "attention": "mup_core.probes.sequence:AttentionProbe",
    "softmax": "mup_core.probes.sequence:SoftmaxProbe",
    "max": "mup_core.probes.sequence:MaxProbe",
    "last_token": "mup_core.probes.sequence:LastTokenProbe",
    "rolling_max": "mup_core.probes.sequence:RollingMaxProbe",
    "per_token": "mup_core.probes.sequence:PerTokenProbe",
    "ema": "mup_core.probes.sequence:EMAProbe",
    "multimax": "mup_core.probes.sequence:MultiMaxProbe",
}
ALL_PROBE_TYPES = tuple(PROBE_CLASSES)
# linear in the mean-pooled activation: deterministic, trained in closed form or by sklearn
LINEAR_PROBE_TYPES = tuple(t for t, where in PROBE_CLASSES.items() if where.startswith("mup_core.probes.linear:"))
