"""Resources: the artifact store (local directory or S3-compatible bucket)."""


from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.models.registry import DEFAULT_MODEL
from mup_core.paths import artifact_root
from mup_core.storage import ArtifactStore, LocalStore, S3Store


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where datasets, activations, probes, metrics and figures are written.

    ``backend="local"`` (default) writes under ``root`` (default ``$MUP_HOME/artifacts``);
    ``backend="s3"`` writes to ``bucket``/``prefix`` (``endpoint_url`` for R2, MinIO,
    SeaweedFS), credentials from the environment.
    """

    backend: str = Field(default="local", description="local or s3")
    root: Optional[str] = Field(default=None, description="local root; default $MUP_HOME/artifacts")
    bucket: Optional[str] = None
    prefix: str = "mup"
    endpoint_url: Optional[str] = None
    region_name: Optional[str] = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Housekeeping as each step starts: stop with a killed run worker, mark runs of
        dead workers failed, remove temporaries killed processes left (mup_dagster.orphans)."""
        from mup_dagster.orphans import guard_step

        run = context.run
        guard_step(context.instance, run.run_id if run else None, self.get_store())

    def get_store(self) -> ArtifactStore:
        if self.backend == "local":
            return LocalStore(self.root or artifact_root())
        if self.backend == "s3":
            if not self.bucket:
                raise dg.Failure("artifact_store: backend 's3' needs `bucket` (and usually `endpoint_url`)")
            from mup_core.storage import s3_client

            return S3Store(s3_client(self.endpoint_url, self.region_name), self.bucket, self.prefix)
        raise dg.Failure(f"artifact_store: unknown backend {self.backend!r}; use 'local' or 's3'")


def default_artifact_store() -> ArtifactStoreResource:
    """Local by default; MUP_S3_BUCKET (+ MUP_S3_ENDPOINT_URL) switches to S3."""
    from mup_core.storage import s3_settings_from_env

    s3 = s3_settings_from_env()
    return ArtifactStoreResource(backend="s3", **s3) if s3 else ArtifactStoreResource()


class DatasetSourcesResource(dg.ConfigurableResource):
    """The files the dataset assets read, watched by the ``dataset_sources`` observation.

    ``corpus_path``: a JSONL/CSV training corpus in the research format; unset = the
    embedded corpus. ``eval_files``: evaluation files added to ``eval_datasets``.
    ``selection_files``: out-of-distribution sets the probe type, layer and alarm
    threshold are chosen on (never reported as evaluation results). Defaults come from
    ``MUP_CORPUS_PATH``, ``MUP_EVAL_FILES`` and ``MUP_SELECTION_FILES`` (os.pathsep-separated).
    """

    corpus_path: Optional[str] = None
    eval_files: list[str] = Field(default_factory=list)
    selection_files: list[str] = Field(default_factory=list)

    def files(self) -> list[str]:
        from pathlib import Path

        from mup_core.corpus import corpus_files

        corpus = [self.corpus_path] if self.corpus_path else [str(p) for p in corpus_files()]
        return corpus + [str(Path(f)) for f in [*self.eval_files, *self.selection_files]]


def default_dataset_sources() -> DatasetSourcesResource:
    import os

    def files(var: str) -> list[str]:
        return [f for f in os.environ.get(var, "").split(os.pathsep) if f]

    return DatasetSourcesResource(corpus_path=os.environ.get("MUP_CORPUS_PATH") or None, eval_files=files("MUP_EVAL_FILES"),
                                  selection_files=files("MUP_SELECTION_FILES"))


class LLMResource(dg.ConfigurableResource):
    """The LLM used for generation and labelling: ``local`` (a registry model, offline)
    or ``openai`` (any OpenAI-compatible endpoint: OpenAI, OpenRouter, vLLM, Ollama,
    ``mup serve``). Responses are cached in ``cache_path`` (default $MUP_HOME/llm_cache.sqlite)."""

    backend: str = "local"
    model: str = DEFAULT_MODEL
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_retries: int = Field(default=5, description="retries of a failed request (429, 5xx, timeouts), with backoff")
    cache_path: Optional[str] = None

    def get_client(self):
        from mup_core.llm import make_client
        from mup_core.paths import mup_home

        cache = self.cache_path or str(mup_home() / "llm_cache.sqlite")
        if self.backend == "openai":
            return make_client("openai", self.model, base_url=self.base_url, cache_path=cache,
                               api_key_env=self.api_key_env, max_concurrency=self.max_concurrency,
                               max_retries=self.max_retries)
        return make_client(self.backend, self.model, cache_path=cache)


def default_llm() -> LLMResource:
    import os

    return LLMResource(
        backend=os.environ.get("MUP_LLM_BACKEND", "local"),
        model=os.environ.get("MUP_LLM_MODEL", DEFAULT_MODEL),
        base_url=os.environ.get("MUP_LLM_BASE_URL") or None,
    )


class TrackingResource(dg.ConfigurableResource):
    """Weights & Biases tracking: mode ``offline`` (default here), ``online`` or ``disabled``."""

    mode: str = "offline"
    project: str = "mup"
    entity: Optional[str] = None
    directory: Optional[str] = None

    def get_tracker(self):
        from mup_core.tracking import Tracker

        return Tracker(self.mode, self.project, self.directory, self.entity)


def default_tracking() -> TrackingResource:
    import os

    return TrackingResource(mode=os.environ.get("MUP_WANDB_MODE", "offline"), project=os.environ.get("WANDB_PROJECT", "mup"))


# the stored form of an asset's value: {VALUE_FORMAT: REFS_VERSION, "value": <typed refs>}; values
# of an older mup (plain dicts) fail with the command that re-materialises them
VALUE_FORMAT, REFS_VERSION = "mup_value_format", 2


class ArtifactIOManager(dg.ConfigurableIOManager):
    """The small values assets hand to each other (dataset and activation references),
    pickled into the artifact store beside the artifacts they point to (``dagster/<asset>/
    <partition>.pkl``): on a laptop under ``$MUP_HOME/artifacts``, in production in the S3
    bucket, so every process of a deployment (Celery workers, Kubernetes step pods, a second
    Dagster home on the same PostgreSQL) reads what another wrote. A value is written
    atomically (local rename, one S3 PUT), and an input whose upstream asset was never
    materialised fails with the command that materialises it, not a bare FileNotFoundError."""

    artifact_store: dg.ResourceDependency[ArtifactStoreResource]

    @staticmethod
    def _op_key(output: dg.OutputContext) -> str:
        """Where an op inside a graph asset keeps its output: per run, step and (dynamic) mapping key."""
        return "dagster/runs/" + "/".join(output.get_identifier()) + ".pkl"

    @staticmethod
    def _keys(asset_key, partitions) -> dict:
        """Store key per partition key (None for an unpartitioned asset)."""
        base = "dagster/" + "/".join(asset_key.path)
        if not partitions:
            return {None: f"{base}.pkl"}
        return {p: f"{base}/{str(p).replace('/', '%2F')}.pkl" for p in partitions}

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        import pickle

        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if len(partitions) > 1:
            raise dg.Failure(f"{context.asset_key.to_user_string()}: one partition per run, got {len(partitions)}; "
                             "launch backfills with one run per partition")
        key = self._op_key(context) if not context.has_asset_key else next(iter(self._keys(context.asset_key, partitions).values()))
        store = self.artifact_store.get_store()
        store.put_bytes(key, pickle.dumps({VALUE_FORMAT: REFS_VERSION, "value": obj}, pickle.HIGHEST_PROTOCOL))
        if obj is not None:
            # ``path`` in the UI belongs to the asset (where its artifacts are), not to this reference
            context.add_output_metadata({"step_output": dg.MetadataValue.path(store.uri(key))})

    def load_input(self, context: dg.InputContext):
        import pickle

        upstream = context.upstream_output
        asset_key = context.asset_key if context.has_asset_key else None
        partitions = list(context.asset_partition_keys) if asset_key is not None and context.has_asset_partitions else []
        keys = {None: self._op_key(upstream)} if asset_key is None else self._keys(asset_key, partitions)
        store = self.artifact_store.get_store()
        values = {}
        for partition, key in keys.items():
            try:
                data = store.get_bytes(key)
            except FileNotFoundError:
                raise self._missing(context, asset_key, partitions, store.uri(key)) from None
            try:
                stored = pickle.loads(data)
            except (AttributeError, ImportError, pickle.UnpicklingError):  # a class an older mup had
                raise self._outdated(context, asset_key, partition, store.uri(key)) from None
            if not (isinstance(stored, dict) and stored.get(VALUE_FORMAT) == REFS_VERSION):
                raise self._outdated(context, asset_key, partition, store.uri(key))
            values[partition] = stored["value"]
        # several upstream partitions arrive as {partition: value}, as with Dagster's own IO managers
        return values if len(partitions) > 1 else next(iter(values.values()))

    @staticmethod
    def _outdated(context, asset_key, partition, uri) -> dg.Failure:
        step = context.upstream_output.step_key if asset_key is None else None
        what = f"asset {asset_key.to_user_string()!r}" if asset_key is not None else f"step {step!r}"
        select = f" --select {asset_key.to_user_string() if asset_key is not None else step.split('.')[0]}"
        part = f" --partition '{partition}'" if partition is not None else ""
        return dg.Failure(description=(
            f"input {context.name!r}: the stored value of {what} ({uri}) was written by an older mup, before "
            f"assets handed each other typed references (mup_core.refs); re-materialise it: "
            f"dagster asset materialize -m mup_dagster.definitions{select}{part}"))

    @staticmethod
    def _missing(context, asset_key, keys, uri) -> dg.Failure:
        import os

        if asset_key is None:  # the value of an op inside a graph asset, written by an earlier step of this run
            step = context.upstream_output.step_key
            return dg.Failure(description=(
                f"input {context.name!r} needs the output of step {step!r} of this run, which is not in this process's "
                f"artifact store ({uri}). Every process of a deployment must use the same store (MUP_S3_BUCKET / "
                f"artifact_store); re-run the asset {step.split('.')[0]!r}"))
        upstream = asset_key.to_user_string()
        where = f" for partition {', '.join(map(str, keys[:3]))}{' ...' if len(keys) > 3 else ''}" if keys else ""
        partition = f" --partition '{keys[0]}'" if len(keys) == 1 else ""
        command = f"dagster asset materialize -m mup_dagster.definitions --select {upstream}{partition}"
        try:
            found = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys or None), limit=1
            ).records
            recorded = found[0] if found else None
        except Exception:  # only to choose the wording
            recorded = None
        if recorded is not None:
            return dg.Failure(description=(
                f"input {context.name!r} needs asset {upstream!r}{where}: it was materialised (run "
                f"{recorded.run_id[:8]}), but its stored value {uri} is not in this process's artifact store. "
                f"Every process of a deployment must use the same store (MUP_S3_BUCKET / artifact_store); "
                f"here, re-materialise it: {command}"
            ))
        return dg.Failure(description=(
            f"input {context.name!r} needs asset {upstream!r}{where}, which has not been materialised in this "
            f"Dagster instance (DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '?')}); materialise it first: {command}"
        ))
