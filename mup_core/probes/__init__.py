from mup_core.probes.base import CLASS_NAMES, Probe, ProbeInfo, load_probe, make_probe, probe_class
from mup_core.probes.train import ALL_PROBE_TYPES, DEFAULT_PROBE_TYPES, configured_probes, train_probe

__all__ = [
    "ALL_PROBE_TYPES",
    "CLASS_NAMES",
    "DEFAULT_PROBE_TYPES",
    "configured_probes",
    "Probe",
    "ProbeInfo",
    "load_probe",
    "make_probe",
    "probe_class",
    "train_probe",
]
