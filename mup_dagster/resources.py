"""Resources: the artifact store (local directory or S3-compatible bucket)."""


from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.paths import artifact_root
from mup_core.storage import ArtifactStore, LocalStore, S3Store


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where datasets, activations, probes, metrics and figures are written.

    ``backend="local"`` (default) writes under ``root`` (default ``$MUP_HOME/artifacts``);
    ``backend="s3"`` writes to ``bucket``/``prefix`` through dagster-aws's S3 client,
    with ``endpoint_url`` for R2 or MinIO.
    """

    backend: str = Field(default="local", description="local or s3")
    root: Optional[str] = Field(default=None, description="local root; default $MUP_HOME/artifacts")
    bucket: Optional[str] = None
    prefix: str = "mup"
    endpoint_url: Optional[str] = None
    region_name: Optional[str] = None

    def get_store(self) -> ArtifactStore:
        if self.backend == "local":
            return LocalStore(self.root or artifact_root())
        if self.backend == "s3":
            if not self.bucket:
                raise dg.Failure("artifact_store: backend 's3' needs `bucket` (and usually `endpoint_url`)")
            from dagster_aws.s3 import S3Resource

            client = S3Resource(endpoint_url=self.endpoint_url, region_name=self.region_name).get_client()
            return S3Store(client, self.bucket, self.prefix)
        raise dg.Failure(f"artifact_store: unknown backend {self.backend!r}; use 'local' or 's3'")


def default_artifact_store() -> ArtifactStoreResource:
    """Local by default; MUP_S3_BUCKET (+ MUP_S3_ENDPOINT_URL) switches to S3."""
    import os

    if os.environ.get("MUP_S3_BUCKET"):
        return ArtifactStoreResource(
            backend="s3",
            bucket=os.environ["MUP_S3_BUCKET"],
            prefix=os.environ.get("MUP_S3_PREFIX", "mup"),
            endpoint_url=os.environ.get("MUP_S3_ENDPOINT_URL") or None,
        )
    return ArtifactStoreResource()
