"""mup_core: plain-Python research library for monitoring language models.

Never imports dagster. See ``mup_dagster`` for the asset graph.
"""

__version__ = "0.1.0"
