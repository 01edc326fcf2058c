"""deploy/kubernetes/, checked without a cluster: the core objects against the Kubernetes API's
schemas (PyPI's ``kubernetes-validate``, strict: an unknown field is an error), the ScaledObject
against KEDA's CRD schema (vendored in tests/acceptance/schemas/), and what ties them to the worker:
its command, probes, grace, variables, and a maxReplicaCount computed with the worker's own
connection-budget check (``worker.db.budget.check``).

None of these tests reads the developer's environment or ``.env`` for the worker's settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from tests.acceptance.test_compose import WORKER_COMMAND, dockerfile_instructions
from worker.config import Config, load_config
from worker.db.budget import ServerUsage, check
from worker.db.budget_registry import Registration
from worker.runtime.operations import Operations

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
# The oldest Kubernetes the manifests are meant for, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
# Each running worker's outbox relay holds one direct LISTEN connection besides its pool
# (worker/runtime/relay.py); the budget check counts it among "other clients" once it is open.
RELAY_CONNECTIONS = 1
ANNOTATION = "pgpool-worker/"
# Stand-ins for the Secret's values, which the manifests never hold.
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://worker_app@postgres:5432/jobs_worker",
    "REDIS_URL": "redis://redis:6379/0",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    [found] = documents(K8S / "kustomization.yaml")
    return found


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind (one object of each)."""
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in documents(K8S / name):
            assert document["kind"] not in found, f"two {document['kind']}s"
            found[document["kind"]] = document
    return found


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    [found] = documents(K8S / "secret.example.yaml")
    return found


@pytest.fixture(scope="module")
def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [found] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def plain_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables with a literal value."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture
def config(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Config:
    """The worker's Config as the pod reads it: the manifest's variables and the defaults."""
    for name in Config.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    values = plain_env(container) | SECRET_VALUES
    return load_config(**{name.lower(): value for name, value in values.items()})


# ---- offline validation -----------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_but_the_secret_template(
    kustomization: dict[str, Any],
) -> None:
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}
    kubectl = shutil.which("kubectl")  # its built-in kustomize, where installed
    if kubectl is not None:
        built = subprocess.run(
            [kubectl, "kustomize", str(K8S)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert built.returncode == 0, built.stderr
        kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout) if d)
        expected = ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "ScaledObject", "Service"]
        assert kinds == expected


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_api_schemas(
    objects: dict[str, dict[str, Any]], secret: dict[str, Any], version: str
) -> None:
    core = [o for kind, o in objects.items() if kind != "ScaledObject"] + [secret]
    assert {o["kind"] for o in core} == {
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
        "Secret",
    }
    for document in core:
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_refuses_an_unknown_field(objects: dict[str, dict[str, Any]]) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(objects["Deployment"]))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def strict(schema: Any) -> Any:
    """An OpenAPI schema of a CRD with unknown fields refused (the API server prunes them, so a
    misspelt field would be dropped without a word): ``additionalProperties: false`` on every
    object with declared properties that does not keep unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in found
        and "additionalProperties" not in found
        and not found.get("x-kubernetes-preserve-unknown-fields")
    ):
        found["additionalProperties"] = False
    return found


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft4Validator:
    [crd] = documents(KEDA_CRD)
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"] and version["storage"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def test_scaled_object_validates_against_kedas_crd_schema(
    objects: dict[str, dict[str, Any]], keda_validator: jsonschema.Draft4Validator
) -> None:
    scaled = objects["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    errors = [e.message for e in keda_validator.iter_errors(scaled)]
    assert not errors, errors


def test_kedas_schema_refuses_a_misspelt_field_and_a_number_for_a_string(
    objects: dict[str, dict[str, Any]], keda_validator: jsonschema.Draft4Validator
) -> None:
    misspelt = yaml.safe_load(yaml.safe_dump(objects["ScaledObject"]))
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    assert not keda_validator.is_valid(misspelt)
    unquoted = yaml.safe_load(yaml.safe_dump(objects["ScaledObject"]))
    unquoted["spec"]["triggers"][0]["metadata"]["threshold"] = 20
    assert not keda_validator.is_valid(unquoted)


# ---- what ties the manifests to the worker ----------------------------------------------------


def test_the_pod_runs_the_images_worker_command(container: dict[str, Any]) -> None:
    assert container["command"] == WORKER_COMMAND
    cmd = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    assert yaml.safe_load(cmd[-1]) == WORKER_COMMAND
    assert container["image"] == "pgpool-worker"


def test_every_variable_is_a_worker_setting_and_the_urls_come_from_the_secret(
    container: dict[str, Any], secret: dict[str, Any]
) -> None:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    assert {n.lower() for n in names} <= set(Config.model_fields)
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == {"DATABASE_URL", "REDIS_URL"}
    for name, ref in refs.items():
        assert ref == {"name": secret["metadata"]["name"], "key": name}
    assert set(secret["stringData"]) == set(refs)
    # A template: the password is a placeholder, and kustomization.yaml does not apply it.
    assert "CHANGE-ME@" in secret["stringData"]["DATABASE_URL"]


def test_probes_reach_the_workers_endpoint_on_the_pods_interfaces(
    container: dict[str, Any], config: Config
) -> None:
    [port] = container["ports"]
    assert port["containerPort"] == config.metrics_port
    # The worker's default is loopback, which the kubelet (on the pod's IP) cannot reach.
    assert Config.model_fields["metrics_host"].default == "127.0.0.1"
    assert config.metrics_host == "0.0.0.0"
    routes = inspect.getsource(Operations._route)
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}
        assert f'"{path}"' in routes
    liveness = container["livenessProbe"]
    # A Redis outage the worker rides out (REDIS_RETRY_WINDOW) restarts nothing.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > config.redis_retry_window


def test_termination_grace_is_above_shutdown_grace(
    objects: dict[str, dict[str, Any]], container: dict[str, Any], config: Config
) -> None:
    grace = objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = float(plain_env(container).get("SHUTDOWN_GRACE", "nan"))
    assert shutdown == config.shutdown_grace == Config.model_fields["shutdown_grace"].default
    # Running jobs get SHUTDOWN_GRACE, then up to 2 x REDIS_SOCKET_TIMEOUT to re-queue the rest.
    assert grace > config.shutdown_grace + 2 * config.redis_socket_timeout


def test_resources_are_requested_and_limited(container: dict[str, Any]) -> None:
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_selectors_match_the_pods(objects: dict[str, dict[str, Any]]) -> None:
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        selector = objects[kind]["spec"].get("selector") or objects[kind]["spec"]["podSelector"]
        assert selector["matchLabels"].items() <= labels.items(), kind
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert {p["targetPort"] for p in service["ports"]} == {"metrics"}
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert objects["ScaledObject"]["spec"]["scaleTargetRef"] == {
        "name": deployment["metadata"]["name"]
    }
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_keda_scales_on_due_jobs_per_pods_max_jobs(
    objects: dict[str, dict[str, Any]], config: Config
) -> None:
    spec = objects["ScaledObject"]["spec"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    assert query == 'max(worker_queue_jobs{job="pgpool-worker", state="due"})'
    assert trigger["metadata"]["threshold"] == str(config.max_jobs)
    # The due count comes from the workers: with none, KEDA would read nothing.
    assert spec["minReplicaCount"] >= 1


# ---- maxReplicaCount from the connection budget ----------------------------------------------


def starters(
    config: Config, other_clients: int
) -> Iterator[tuple[int, Registration, list[Registration]]]:
    """What the n-th pod's budget check sees, n = 1, 2, ...: the server's client backends, its own
    registration and the n - 1 live pods before it, each with its pool full and its relay's LISTEN
    connection open."""
    live: list[Registration] = []
    for n in range(1, 10_000):
        own = Registration(
            worker=f"pgpool-worker-{n}:1",
            host=f"pgpool-worker-{n}",
            pid=1,
            pid_namespace=f"pid:[{n}]",
            pool_max=config.pool_max_size,
            pool_open=config.pool_min_size,
            pooled=False,
            started_at=float(n),
        )
        held = sum(r.pool_open + RELAY_CONNECTIONS for r in live) + own.pool_open
        yield other_clients + held, own, list(live)
        live.append(dataclasses.replace(own, pool_open=own.pool_max))


def pods_that_fit(config: Config, max_connections: int, reserved: int, other_clients: int) -> int:
    """How many pods start one after another before the worker's own budget check refuses one."""
    for in_use, own, live in starters(config, other_clients):
        usage = ServerUsage(max_connections, reserved, in_use)
        if not check(usage, config, own, live).fits:
            return len(live)
    raise AssertionError("the budget never ran out")


def documented_formula(config: Config, max_connections: int, reserved: int, others: int) -> int:
    """docs/kubernetes.md's closed form of the same number."""
    pool, room = config.pool_max_size, max_connections - reserved - others
    fits = (room + RELAY_CONNECTIONS) // (pool + RELAY_CONNECTIONS)
    budget = config.pg_connection_budget
    return fits if budget is None else min(fits, budget // pool)


def test_max_replica_count_is_what_the_workers_budget_check_lets_start(
    objects: dict[str, dict[str, Any]], config: Config
) -> None:
    spec = objects["ScaledObject"]["spec"]
    server = {
        key.removeprefix(ANNOTATION): int(value)
        for key, value in objects["ScaledObject"]["metadata"]["annotations"].items()
        if key.startswith(ANNOTATION)
    }
    fits = pods_that_fit(
        config,
        server["max-connections"],
        server["superuser-reserved-connections"],
        server["other-clients"],
    )
    # A pod being replaced holds its pool until it exits: the rollout may add that many.
    rollout = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxSurge"] == 0
    headroom = rollout["maxSurge"] + rollout["maxUnavailable"]
    assert spec["maxReplicaCount"] == fits - headroom >= spec["minReplicaCount"]
    # 80 // 10: PG_CONNECTION_BUDGET, not the server, is what binds for these numbers.
    assert (config.pg_connection_budget, config.pool_max_size, fits) == (80, 10, 8)


@pytest.mark.parametrize("budget", [None, 80, 35])
@pytest.mark.parametrize("max_connections", [20, 100, 500])
def test_the_documented_formula_is_the_budget_checks(
    config: Config, budget: int | None, max_connections: int
) -> None:
    for pool in (5, 10, 20):
        trial = config.model_copy(update={"pg_connection_budget": budget, "pg_pool_max_size": pool})
        found = pods_that_fit(trial, max_connections, 3, 7)
        assert found == documented_formula(trial, max_connections, 3, 7), (pool, budget)
        assert found == 0 or found * pool <= min(budget or math.inf, max_connections - 3 - 7)


def test_the_documented_scrape_job_finds_the_metrics_service(
    objects: dict[str, dict[str, Any]],
) -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    section = text.split("\n## Prometheus\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    [job] = yaml.safe_load(block)["scrape_configs"]
    assert job["job_name"] == "pgpool-worker"  # what the KEDA query and the alert rules select
    [keep] = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    service = objects["Service"]
    [port] = service["spec"]["ports"]
    assert keep["regex"] == f"{service['metadata']['name']};{port['name']}"
    assert keep["source_labels"] == [
        "__meta_kubernetes_service_name",
        "__meta_kubernetes_endpoint_port_name",
    ]
