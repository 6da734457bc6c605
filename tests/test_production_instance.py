"""The production instance config (deploy/dagster.yaml) against a real PostgreSQL on 127.0.0.1."""

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import pytest

from dagster_helpers import materialize

REPO = Path(__file__).resolve().parents[1]
PG = {"host": os.environ.get("MUP_TEST_PG_HOST", "127.0.0.1"), "port": os.environ.get("MUP_TEST_PG_PORT", "5432"),
      "user": os.environ.get("MUP_TEST_PG_USER", "postgres")}


@pytest.fixture
def pg_database():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG['host']}:{PG['port']}: {exc}")
    admin.autocommit = True
    name = f"mup_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_runs_and_materialisations_are_stored_in_postgres(pg_database, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"MUP_PG_HOST": PG["host"], "MUP_PG_PORT": PG["port"], "MUP_PG_USER": PG["user"],
                       "MUP_PG_PASSWORD": "", "MUP_PG_DB": pg_database}.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = materialize(instance, tmp_path / "artifacts", ["stakes_corpus"])
        assert result.success
    # a fresh instance (another process in production) sees the same history
    with dg.DagsterInstance.from_config(str(home)) as again:
        event = again.get_latest_materialization_event(dg.AssetKey("stakes_corpus"))
        assert event is not None and event.run_id == result.run_id
        assert event.asset_materialization.metadata["rows"].value >= 600
