"""Defaults of activation extraction, importable without torch (for configuration).

Outside the ``activations`` package on purpose: importing that package loads torch."""

# Padded tokens per forward pass. On 2 CPU cores 2,048 beat 4,096 by about 12 % (less
# padding, smaller attention squares; docs/PERFORMANCE.md); on a GPU raise it (16k+).
DEFAULT_BATCH_TOKENS = 2048
# Megabytes of activations (all requested layers) per shard streamed to the store:
# peak memory of an extraction is about one shard, whatever the data set's size.
DEFAULT_SHARD_MB = 256.0
