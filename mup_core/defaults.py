"""Defaults shared by the core and the Dagster configs, importable without torch or
scikit-learn (configuration classes load with the definitions, which stay fast)."""

# -- activation extraction -------------------------------------------------------------------
# Padded tokens per forward pass. On 2 CPU cores 2,048 beat 4,096 by about 12 % (less
# padding, smaller attention squares; docs/PERFORMANCE.md); on a GPU raise it (16k+).
DEFAULT_BATCH_TOKENS = 2048
# Megabytes of activations (all requested layers) per shard streamed to the store:
# peak memory of an extraction is about one shard, whatever the data set's size.
DEFAULT_SHARD_MB = 256.0

# -- bootstrap intervals ---------------------------------------------------------------------
# resamples of a 95 % percentile bootstrap interval
N_BOOT = 1000
# resamples of a paired difference between two policies (more: it is the headline number)
PAIRED_N_BOOT = 2000
