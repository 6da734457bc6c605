from mup_core.probes import linear as _linear  # noqa: F401  (registers probe types)
from mup_core.probes import sequence as _sequence  # noqa: F401
from mup_core.probes.base import PROBE_TYPES, Probe, ProbeInfo, load_probe, make_probe
from mup_core.probes.train import ALL_PROBE_TYPES, DEFAULT_PROBE_TYPES, configured_probes, train_probe

__all__ = [
    "ALL_PROBE_TYPES",
    "DEFAULT_PROBE_TYPES",
    "PROBE_TYPES",
    "configured_probes",
    "Probe",
    "ProbeInfo",
    "load_probe",
    "make_probe",
    "train_probe",
]
