"""Nothing left running or half-written when a run's process dies.

Three parts, all called from ``ArtifactStoreResource.setup_for_execution`` (every step
that touches the store) and the first also from a sensor:

- ``reap_orphaned_runs``: a run whose run-worker process on this host is gone (``kill
  -9`` of ``dagster asset materialize``, an out-of-memory kill, a crashed daemon) stays
  ``STARTED`` forever: Dagster's run monitoring cannot check the default run launcher's
  workers. Each run records its worker as a tag (host, pid, process start time); a run
  whose worker no longer exists is reported failed, with the reason.
- ``watch_parent``: a step subprocess of the multiprocess executor keeps running when its
  run worker is killed (it is reparented, not signalled). A daemon thread notices the
  new parent within a second and interrupts the step, so it stops, and its ``finally``
  blocks remove its temporaries.
- ``clean_stale_temps`` of the store: temp files and scratch directories of dead
  processes are removed (their names carry the pid).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import dagster as dg

log = logging.getLogger(__name__)

WORKER_TAG = "mup/run_worker"


def process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux), so that a reused
    pid is not mistaken for the original process; "" where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_alive(tag: str) -> bool | None:
    """Whether the run worker named by a tag still runs; None when it ran on another host."""
    try:
        host, pid_s, started = tag.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    from mup_core.storage import pid_alive

    if not pid_alive(pid):
        return False
    return not started or process_start_time(pid) in ("", started)


def _in_step_subprocess() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None


def run_worker_pid() -> int:
    """The run worker: this process, or the parent of a multiprocess-executor step."""
    return os.getppid() if _in_step_subprocess() else os.getpid()


def record_run_worker(instance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    if run is None or WORKER_TAG in run.tags:
        return
    pid = run_worker_pid()
    instance.add_run_tags(run_id, {WORKER_TAG: f"{socket.gethostname()}:{pid}:{process_start_time(pid)}"})


def reap_orphaned_runs(instance) -> list[str]:
    """Report failed every started run whose run worker on this host has gone."""
    reaped = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for run in runs:
        tag = run.tags.get(WORKER_TAG)
        if tag and worker_alive(tag) is False:
            instance.report_run_failed(
                run,
                f"the run's worker process ({tag}) is gone (killed, or out of memory); marked failed by mup. "
                "Re-run it: finished activation shards and published probes are reused.",
            )
            reaped.append(run.run_id)
    return reaped


_watching = False


def watch_parent(interval: float = 1.0) -> None:
    """In a step subprocess: interrupt this process once its run worker has died."""
    global _watching
    if _watching or not _in_step_subprocess():
        return
    _watching = True
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                log.error("run worker (pid %d) is gone; stopping this step (pid %d)", parent, os.getpid())
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)  # an interrupt that was swallowed: leave for good
                os._exit(1)

    threading.Thread(target=watch, name="mup-parent-watch", daemon=True).start()


def guard_step(instance, run_id: str | None, store) -> None:
    """Everything above, for the step that is starting. Never fails the step."""
    try:
        watch_parent()
        if instance is not None and run_id:
            record_run_worker(instance, run_id)
            for reaped in reap_orphaned_runs(instance):
                log.warning("marked run %s failed: its worker process is gone", reaped)
        removed = store.clean_stale_temps()
        if removed:
            log.warning("removed %d temporaries of killed processes, e.g. %s", len(removed), removed[0])
    except Exception:  # housekeeping must not cost a run
        log.exception("mup housekeeping failed")


@dg.sensor(
    name="orphaned_runs",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose worker process died (Dagster's run monitoring cannot see "
    "the default run launcher's workers).",
)
def orphaned_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = reap_orphaned_runs(context.instance)
    return dg.SkipReason(f"marked {len(reaped)} orphaned runs failed: {reaped}" if reaped else "no orphaned runs")
