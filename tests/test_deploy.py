"""deploy/: the Kubernetes values and executor config agree with dagster-k8s's own config
schemas and with the code (every step that runs a model asks for a GPU)."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
EXECUTOR = yaml.safe_load((REPO / "deploy" / "k8s_executor.yaml").read_text())

dagster_k8s = pytest.importorskip("dagster_k8s")


def _validate(config_type, value):
    from dagster._config import validate_config

    result = validate_config(config_type, value)
    assert result.success, [e.message for e in result.errors]


def _launcher_config_as_the_chart_renders_it(values: dict) -> dict:
    """The run launcher block the official chart writes into the instance's dagster.yaml
    (templates/helpers/instance/_run-launcher.tpl) from ``runLauncher.config.k8sRunLauncher``."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    camel = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
             "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
             "jobMetadata": "job_metadata"}
    rendered = {
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "mup-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "job_namespace": launcher.get("jobNamespace", "dagster"),
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
        "env_secrets": [s["name"] for s in launcher.get("envSecrets", [])],
    }
    if "runK8sConfig" in launcher:
        rendered["run_k8s_config"] = {camel[k]: v for k, v in launcher["runK8sConfig"].items()}
    assert set(launcher) <= {"envSecrets", "runK8sConfig", "jobNamespace"}, "teach this renderer the new key"
    return rendered


def test_run_launcher_values_validate_with_dagster_k8s_schema():
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    _validate(dagster_k8s.K8sRunLauncher.config_type(), _launcher_config_as_the_chart_renders_it(VALUES))


def test_compute_log_values_validate_with_dagster_aws_schema():
    from dagster_aws.s3 import S3ComputeLogManager

    manager = VALUES["computeLogManager"]
    assert manager["type"] == "S3ComputeLogManager"
    snake = {"bucket": "bucket", "prefix": "prefix", "localDir": "local_dir", "useSsl": "use_ssl", "verify": "verify",
             "verifyCertPath": "verify_cert_path", "endpointUrl": "endpoint_url", "skipEmptyFiles": "skip_empty_files"}
    config = manager["config"]["s3ComputeLogManager"]
    _validate(S3ComputeLogManager.config_type(), {snake[k]: v for k, v in config.items()})
    env = {e["name"]: e["value"] for e in VALUES["dagster-user-deployments"]["deployments"][0]["env"]}
    assert config["bucket"] == env["MUP_S3_BUCKET"]  # the artifacts' bucket
    for reader in ("dagsterWebserver", "dagsterDaemon"):  # they read the logs (and sensors the bucket)
        assert {"name": "mup-s3-credentials"} in VALUES[reader]["envSecrets"], reader


def test_executor_config_validates_and_is_what_the_code_loads(monkeypatch):
    _validate(dagster_k8s.k8s_job_executor.config_schema.config_type, EXECUTOR)
    from mup_dagster.execution import default_executor, k8s_executor_config

    assert k8s_executor_config() == EXECUTOR
    monkeypatch.setenv("MUP_EXECUTOR", "k8s")
    assert default_executor().name == "k8s"
    monkeypatch.setenv("MUP_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="MUP_EXECUTOR='kubernetes': use multiprocess"):
        default_executor()


def test_every_step_that_runs_a_model_requests_a_gpu_and_no_other_does():
    from mup_dagster.automation import GPU_POOL
    from mup_dagster.definitions import ASSETS

    ops = [op for a in ASSETS if hasattr(a, "node_def") for op in a.node_def.iterate_op_defs()]
    gpu_steps = {op.name for op in ops if op.pool == GPU_POOL}
    assert "activation_piece" in gpu_steps and "activation_sets" not in gpu_steps
    per_step = EXECUTOR["per_step_k8s_config"]
    assert gpu_steps == set(per_step), f"GPU-pool steps of the code vs deploy/k8s_executor.yaml: {gpu_steps ^ set(per_step)}"
    for step, config in per_step.items():
        assert config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1, step
    assert "nvidia.com/gpu" not in str(EXECUTOR["step_k8s_config"])
    assert "nvidia.com/gpu" not in str(VALUES["runLauncher"])  # the run pod only orchestrates


def test_secrets_are_named_not_written_and_agree_everywhere():
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    names = [s["name"] for s in deployment["envSecrets"]]
    assert names == [s["name"] for s in VALUES["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]]
    assert names == EXECUTOR["env_secrets"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["MUP_EXECUTOR"] == "k8s" and env["MUP_S3_BUCKET"]
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "MUP_PG_PASSWORD"} & set(env)
    assert VALUES["postgresql"]["enabled"] is False  # managed outside the cluster
