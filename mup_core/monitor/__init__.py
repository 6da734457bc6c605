"""Deploying a probe as a live monitor: the bundle (which probe, layer, threshold) and
the streaming monitor that scores a conversation token by token."""

from mup_core.monitor.bundle import (
    BundleError,
    MonitorBundle,
    calibrate_threshold,
    choose_probe,
    find_bundle,
    load_bundle,
    save_bundle,
    uncertain_band,
)

__all__ = [
    "BundleError",
    "MonitorBundle",
    "calibrate_threshold",
    "choose_probe",
    "find_bundle",
    "load_bundle",
    "save_bundle",
    "uncertain_band",
]
