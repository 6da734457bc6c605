"""Nothing left running or half-written when a run's process dies.

Three parts, all called from ``ArtifactStoreResource.setup_for_execution`` (every step
that touches the store) and the first also from a sensor:

- ``reap_orphaned_runs``: a run whose run-worker process on this host is gone (``kill
  -9`` of ``dagster asset materialize``, an out-of-memory kill, a crashed daemon) stays
  ``STARTED`` forever: Dagster's run monitoring cannot check the default run launcher's
  workers. Each run records its worker as a tag (host, pid namespace, pid, process start
  time: the process that logged RUN_START); a run whose worker no longer exists is reported
  failed, with the reason.
- ``watch_parent``: a step subprocess of the multiprocess executor keeps running when its
  run worker is killed (it is reparented, not signalled). In a process whose parent is
  the run's worker (never the worker itself), a daemon thread notices the new parent
  within a second and interrupts the step, so it stops, and its ``finally`` blocks remove
  its temporaries.
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


def worker_tag(pid: int) -> str:
    from mup_core.storage import pid_namespace

    return f"{socket.gethostname()}:{pid_namespace()}:{pid}:{process_start_time(pid)}"


def worker_alive(tag: str) -> bool | None:
    """Whether the run worker named by a tag still runs; None when that cannot be told from
    here (another host, or another pid namespace: a container whose pids mean nothing here)."""
    from mup_core.storage import pid_alive, pid_namespace

    try:
        host, namespace, pid_s, started = tag.rsplit(":", 3)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname() or namespace != str(pid_namespace()):
        return None
    if not pid_alive(pid):
        return False
    return not started or process_start_time(pid) in ("", started)


def run_worker_pid(instance, run_id: str) -> int | None:
    """The process that started the run (its RUN_START event records it): the CLI process
    of `dagster asset materialize`, or the run worker the launcher started."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None else None


def record_run_worker(instance, run_id: str) -> int | None:
    """Tag the run with its worker (once) and return the worker's pid."""
    pid = run_worker_pid(instance, run_id)
    run = instance.get_run_by_id(run_id)
    if pid is not None and run is not None and WORKER_TAG not in run.tags:
        instance.add_run_tags(run_id, {WORKER_TAG: worker_tag(pid)})
    return pid


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


def watch_parent(worker_pid: int | None, interval: float = 1.0) -> None:
    """In a step subprocess (whose parent is the run's worker, not the run worker itself):
    interrupt this process once that worker has died."""
    global _watching
    if _watching or worker_pid is None or worker_pid == os.getpid() or os.getppid() != worker_pid:
        return
    _watching = True
    parent = worker_pid

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
        if instance is not None and run_id:
            watch_parent(record_run_worker(instance, run_id))
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
