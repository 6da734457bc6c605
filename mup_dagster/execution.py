"""How a run executes its steps, chosen by configuration, never by a fork of the code.

``MUP_EXECUTOR``:

- ``multiprocess`` (default, a laptop, CI): steps run in subprocesses of the run, one at a
  time unless ``MUP_MAX_CONCURRENT_STEPS`` says more (nearly every step is a torch job that
  already uses every core);
- ``in_process``: every step in the run's own process (no subprocess start per step: the
  quickest for small models and short steps; a crash of one step ends the run);
- ``celery``: each step is a task on a Celery queue, run by whichever worker takes it
  (``make up`` starts two; ``mup_dagster.celery_app`` is the workers' app). Broker and result
  backend come from ``MUP_CELERY_BROKER`` / ``MUP_CELERY_BACKEND`` at run time, so a password
  in the URL lives only in the environment, never in the job snapshot the UI shows;
- ``k8s``: one Kubernetes job per step (``dagster-k8s``), configured by deploy/helm.

A step whose worker dies is not lost: tasks are acknowledged only when done
(``task_acks_late``) and given back to the queue when their worker is lost, so another
worker runs it; every artifact is written aside and renamed (or one S3 PUT), so the dead
worker's half-written files are never read.
"""

from __future__ import annotations

import os

import dagster as dg

DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"
# what makes a killed worker's step run again elsewhere (and one step per worker at a time)
CELERY_SETTINGS = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}


def celery_config(resolved: bool = False) -> dict:
    """The Celery executor's config. ``resolved=False`` names the environment variables
    (what the job carries); ``True`` reads them (what a worker starts with)."""
    if resolved:
        broker = os.environ.get("MUP_CELERY_BROKER", DEFAULT_BROKER)
        backend = os.environ.get("MUP_CELERY_BACKEND", DEFAULT_BACKEND)
    else:
        os.environ.setdefault("MUP_CELERY_BROKER", DEFAULT_BROKER)
        os.environ.setdefault("MUP_CELERY_BACKEND", DEFAULT_BACKEND)
        broker, backend = {"env": "MUP_CELERY_BROKER"}, {"env": "MUP_CELERY_BACKEND"}
    return {"broker": broker, "backend": backend, "config_source": dict(CELERY_SETTINGS)}


def k8s_executor_config(path: str | os.PathLike | None = None) -> dict:
    """deploy/k8s_executor.yaml (or ``MUP_K8S_EXECUTOR_CONFIG``): pods per step, GPU steps
    requesting ``nvidia.com/gpu``."""
    from pathlib import Path

    import yaml

    path = Path(path or os.environ.get("MUP_K8S_EXECUTOR_CONFIG") or Path(__file__).resolve().parents[1] / "deploy" / "k8s_executor.yaml")
    if not path.exists():
        raise FileNotFoundError(f"MUP_EXECUTOR=k8s needs the executor config {path} (set MUP_K8S_EXECUTOR_CONFIG)")
    return yaml.safe_load(path.read_text())


def default_executor() -> dg.ExecutorDefinition:
    kind = os.environ.get("MUP_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": int(os.environ.get("MUP_MAX_CONCURRENT_STEPS", "1"))})
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config())
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config())
    raise ValueError(f"MUP_EXECUTOR={kind!r}: use multiprocess (default), in_process, celery or k8s")
