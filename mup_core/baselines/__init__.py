"""Monitors to compare probes with: TF-IDF, prompted LLM, finetuned classifier and
continuation (the model writes a judgement), plus compute accounting."""

from mup_core.baselines.compute import ModelCompute, model_compute, probe_flops
from mup_core.baselines.continuation import ContinuationMonitor, parse_judgement
from mup_core.baselines.finetuned import FinetuneConfig, FinetunedClassifier
from mup_core.baselines.prompted import TEMPLATES, EndpointPromptedMonitor, LocalPromptedMonitor
from mup_core.baselines.tfidf import TfidfMonitor

__all__ = [
    "TEMPLATES",
    "ContinuationMonitor",
    "EndpointPromptedMonitor",
    "FinetuneConfig",
    "FinetunedClassifier",
    "LocalPromptedMonitor",
    "ModelCompute",
    "TfidfMonitor",
    "model_compute",
    "parse_judgement",
    "probe_flops",
]
