"""The Celery app of mup's workers: ``celery -A mup_dagster.celery_app worker``.

The same broker, backend and settings as the runs' executor (mup_dagster.execution), read
from the environment when the worker starts. ``make up`` starts two workers with it."""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from mup_dagster.execution import celery_config

app = make_app(CeleryExecutor.for_cli(**celery_config(resolved=True)).app_args())

execute_plan = create_task(app)
