"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

docker-compose.yml is validated against the Compose Specification's JSON schema, as shipped (with
its licence) by the ``check-jsonschema`` package, a pinned dev dependency: upgrading that pin follows
the specification.

None of these tests reads the developer's environment or ``.env``: defaults are compared with
``Config.model_fields`` and compose variables are resolved from an explicit mapping.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from pydantic import TypeAdapter

from worker.config import Config, load_config
from worker.ops.dashboard_auth import DashboardSettings

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"

# The command the README documents; the image's CMD and the compose worker must both be it.
WORKER_COMMAND = ["arq", "worker.Settings"]
# Liveness and readiness from the worker's own endpoint (docs/operations.md).
HEALTH_COMMAND = ["python", "-m", "worker", "health"]
SETUP_COMMAND = ["python", "-m", "worker", "setup"]
CONDITIONS = {"service_healthy", "service_completed_successfully"}

CONFIG_VARIABLES = {name.upper(): name for name in Config.model_fields}
# The dashboard's own settings (worker/ops/dashboard_auth.py), passed to its service only.
DASHBOARD_VARIABLES = {f"DASHBOARD_{name.upper()}": name for name in DashboardSettings.model_fields}
# Set by docker-compose.yml from the service names, not from the worker's defaults.
SERVICE_URLS = {"DATABASE_URL", "REDIS_URL"}
# An empty value means something (no cron job), so compose must default only when unset.
EMPTY_IS_A_VALUE = {"CRON_DEACTIVATE"}
# Set by docker-compose.yml itself, whatever .env says: the metrics endpoint listens on the
# container's interfaces for Prometheus on the compose network (the worker's default is loopback).
SET_BY_COMPOSE = {"METRICS_HOST": "0.0.0.0"}
COMPOSE_ONLY = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "SEED_USERS",
    "WORKER_DB_ROLE",
    "WORKER_DB_PASSWORD",
    "DASHBOARD_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "WORKER_DATABASE_HOST",
    "WORKER_DATABASE_PORT",
    "PGBOUNCER_POOL_SIZE",
    "PGBOUNCER_MAX_CLIENT_CONN",
}
REQUIRED_COMPOSE_VARIABLES = {"POSTGRES_PASSWORD", "WORKER_DB_PASSWORD"}
# What an operator must set before `docker compose up`; everything else has a default.
OPERATOR_ENVIRONMENT = {"POSTGRES_PASSWORD": "s3cret", "WORKER_DB_PASSWORD": "w0rker"}

INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


# ---- helpers ------------------------------------------------------------------------------


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Resolve ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``$$``."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = environ.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if not missing:
            return value or ""
        if op in (":?", "?"):
            raise KeyError(f"required variable {name}: {arg}")
        return arg if op is not None else ""

    return INTERPOLATION.sub(resolve, text)


def defaults_in(text: str) -> list[tuple[str, str, str]]:
    """Every ``(name, operator, argument)`` of the ``${...}`` expressions in ``text``."""
    return [
        (m.group("name"), m.group("op") or "", m.group("arg") or "")
        for m in INTERPOLATION.finditer(text)
        if m.group("name")
    ]


def parse_as(field: str, text: str) -> Any:
    """``text`` read as the Config field's type, as the worker reads its variable."""
    annotation = Config.model_fields[field].annotation
    assert annotation is not None
    return TypeAdapter(annotation).validate_python(text)


def strings_in(node: Any) -> list[str]:
    """Every string value (not key) in a loaded YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


def as_argv(command: Any) -> list[str]:
    """A compose command (string or list) as an argument list."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` as a mapping, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.partition("=") for item in env]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's ``(INSTRUCTION, arguments)`` in order, continuations joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def env_example() -> dict[str, tuple[bool, str]]:
    """``.env.example`` as ``NAME -> (commented out, value)``, quotes around a value removed."""
    entries: dict[str, tuple[bool, str]] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line.strip())
        if match is None:
            continue
        name, value = match.group("name"), match.group("value").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        assert name not in entries, f".env.example: {name} is listed twice"
        entries[name] = (match.group("commented") is not None, value)
    return entries


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


@pytest.fixture(scope="module")
def worker(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert "worker" in services
    return services["worker"]


@pytest.fixture(scope="module")
def setup(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert "setup" in services
    return services["setup"]


# ---- the compose file ---------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )
    assert "version" not in compose, "`version` is obsolete in the Compose Specification"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        if service.get("restart") == "no":  # a one-shot job: no health, only an exit code
            assert check == {"disable": True}, f"one-shot {name} should disable the healthcheck"
            continue
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}'s healthcheck has no {key}"


def test_every_dependency_waits_on_a_condition(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{target} has no check"
            else:
                assert services[target].get("restart") == "no", f"{target} is not one-shot"


def test_worker_waits_for_its_services_and_for_setup(worker: dict[str, Any]) -> None:
    conditions = {target: spec["condition"] for target, spec in worker["depends_on"].items()}
    assert conditions == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "setup": "service_completed_successfully",
    }


def test_worker_runs_the_documented_command(worker: dict[str, Any]) -> None:
    assert as_argv(worker.get("command")) == WORKER_COMMAND
    assert worker["healthcheck"]["test"] == ["CMD", *HEALTH_COMMAND]
    assert worker.get("restart") == "unless-stopped"
    assert "stop_grace_period" in worker


def test_worker_can_be_scaled(worker: dict[str, Any]) -> None:
    assert "container_name" not in worker, "a fixed container name allows one replica only"
    assert "ports" not in worker, "a published host port allows one replica only"
    assert "hostname" not in worker


def test_setup_service_runs_worker_setup(setup: dict[str, Any], worker: dict[str, Any]) -> None:
    argv = as_argv(setup.get("command"))
    assert argv[: len(SETUP_COMMAND)] == SETUP_COMMAND
    seed = argv[len(SETUP_COMMAND) :]
    assert seed[:1] == ["--seed"] and defaults_in(seed[1]) == [("SEED_USERS", ":-", "10000")]
    assert setup.get("restart") == "no"
    assert setup["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "build" in setup and setup["build"] == worker.get("build"), "setup runs the worker image"


def test_worker_gets_every_config_variable(worker: dict[str, Any], setup: dict[str, Any]) -> None:
    env = environment_of(worker)
    missing = sorted(set(CONFIG_VARIABLES) - set(env))
    assert not missing, f"the worker service does not pass {missing}"
    setup_env = environment_of(setup)
    # Same configuration, except that setup connects as the owner and the worker as its role.
    shared = {name for name in env if name != "DATABASE_URL"}
    assert {n: setup_env.get(n) for n in shared} == {n: env[n] for n in shared}, (
        "setup must read the same configuration as the worker"
    )


def test_worker_compose_defaults_are_the_config_defaults(worker: dict[str, Any]) -> None:
    env = environment_of(worker)
    for name, field in CONFIG_VARIABLES.items():
        if name in SERVICE_URLS:
            continue
        default = Config.model_fields[field].default
        value = env.get(name)
        if name in SET_BY_COMPOSE:
            assert value == SET_BY_COMPOSE[name], f"{name}: docker-compose.yml sets {value!r}"
            continue
        if default is None:  # an empty value is invalid: pass it through only when it is set
            assert value is None, f"{name} must be passed through (`{name}:`), not {value!r}"
            continue
        assert value is not None, f"{name} has no value in docker-compose.yml"
        [(var, op, arg)] = defaults_in(value)
        assert var == name, f"{name} is read from ${{{var}}}"
        assert op == ("-" if name in EMPTY_IS_A_VALUE else ":-"), f"{name}: ${{{var}{op}...}}"
        parsed = parse_as(field, arg)
        assert parsed == default, f"{name}: compose default {arg!r}, worker default {default!r}"


def test_worker_configuration_resolves_to_the_compose_services(
    worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in CONFIG_VARIABLES:  # only the resolved compose values may reach Config
        monkeypatch.delenv(name, raising=False)
    resolved = {
        CONFIG_VARIABLES[name].lower(): interpolate(value, OPERATOR_ENVIRONMENT)
        for name, value in environment_of(worker).items()
        if value is not None and name in CONFIG_VARIABLES
    }
    config = load_config(_env_file=None, **resolved)
    database = urlsplit(config.database_url)
    assert (database.hostname, database.port, database.path) == ("postgres", 5432, "/jobs_worker")
    assert (database.username, database.password) == ("worker_app", "w0rker")
    redis = urlsplit(config.redis_url)
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    with pytest.raises(KeyError, match="WORKER_DB_PASSWORD"):
        interpolate(environment_of(worker)["DATABASE_URL"] or "", {})


def test_setup_owns_the_schema_and_creates_the_worker_role(setup: dict[str, Any]) -> None:
    command = setup["command"]
    assert command[command.index("--worker-role") + 1] == "${WORKER_DB_ROLE:-worker_app}"
    env = environment_of(setup)
    owner = urlsplit(interpolate(env["DATABASE_URL"] or "", OPERATOR_ENVIRONMENT))
    assert (owner.username, owner.password) == ("postgres", "s3cret")
    assert "WORKER_DB_PASSWORD" in env


def test_required_variables_have_no_default(compose: dict[str, Any]) -> None:
    for name, op, _ in (d for text in strings_in(compose) for d in defaults_in(text)):
        if name in REQUIRED_COMPOSE_VARIABLES:
            assert op == ":?", f"{name} must be required (${{{name}:?...}}), not {op!r}"


# ---- the Dockerfile -----------------------------------------------------------------------


def test_dockerfile_cmd_is_the_worker_command(worker: dict[str, Any]) -> None:
    cmds = [json.loads(args) for keyword, args in dockerfile_instructions() if keyword == "CMD"]
    assert cmds[-1:] == [WORKER_COMMAND]
    assert as_argv(worker.get("command")) == cmds[-1]


def test_dockerfile_healthcheck_asks_the_worker() -> None:
    [check] = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert json.loads(command) == HEALTH_COMMAND
    assert "--interval=" in options and "--timeout=" in options


def test_dockerfile_installs_the_lock_first_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    copies = [args.split()[0] for keyword, args in instructions if keyword == "COPY"]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert copies[0] == "requirements.lock", "the lock must be installed before the code"
    assert ("RUN", "pip install --no-cache-dir -r requirements.lock") in instructions
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the worker must not run as root"
    assert keywords.index("USER") < keywords.index("CMD")
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env


def test_dockerfile_installs_the_project_as_a_package() -> None:
    """The image runs the installed package (its migrations are package data), not a source tree."""
    instructions = dockerfile_instructions()
    copies = [args.split() for keyword, args in instructions if keyword == "COPY"]
    sources = {source for args in copies for source in args[:-1]}
    assert {"pyproject.toml", "README.md", "LICENSE", "worker/", "jobs/"} <= sources
    assert "migrations/" not in sources, "the migrations ship inside worker/db/"
    assert (ROOT / "worker" / "db" / "migrations" / "0001_users.sql").is_file()
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    [install] = [run for run in runs if "--no-deps" in run]
    assert install.startswith("pip install ") and runs.index(install) > runs.index(
        "pip install --no-cache-dir -r requirements.lock"
    ), "the project is installed after its pinned dependencies, without resolving any"
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONPATH" not in env, "the code must run from site-packages, not from a source tree"
    [workdir] = [args for keyword, args in instructions if keyword == "WORKDIR"]
    targets = {d if d.startswith("/") else f"{workdir}/{d.removeprefix('./')}" for *_, d in copies}
    assert not any(t.startswith((f"{workdir}/worker", f"{workdir}/jobs")) for t in targets), (
        "no source tree in the working directory, where `python -m` would import it first"
    )


def pins(lock: str) -> dict[str, str]:
    """A lock's ``name -> version``."""
    found = {}
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            found[name] = version
    return found


def test_the_image_lock_serves_the_dashboard_and_no_lock_names_an_index() -> None:
    """The compose service ``dashboard`` runs the image, whose lock is the ``dashboard`` extra's."""
    pinned = set(pins("requirements.lock"))
    assert {"starlette", "uvicorn", "arq", "asyncpg"} <= pinned
    assert not {"saq", "matplotlib", "pytest"} & pinned, "the image installs no bench or dev tools"
    for lock in ROOT.glob("requirements*.lock"):
        assert "://" not in lock.read_text(encoding="utf-8"), f"{lock.name} names a URL"


def test_the_image_lock_can_trace_and_agrees_with_the_dev_lock() -> None:
    """The image installs the ``tracing`` extra (the OpenTelemetry SDK and its OTLP exporter), at
    the versions the venv's tests ran with."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    tracing = {
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0] for requirement in extras["tracing"]
    }
    assert tracing == {
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
    }
    image, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert tracing | {"opentelemetry-proto", "protobuf"} <= set(image), "the image cannot trace"
    assert "--extra tracing" in (ROOT / "requirements.lock").read_text(encoding="utf-8")
    differ = {
        name: (version, dev.get(name))
        for name, version in image.items()
        if dev.get(name) != version
    }
    assert not differ, f"requirements.lock and requirements-dev.lock differ: {differ}"
    # `make lock` writes the image's lock with the same extras.
    [image_lock] = [
        line
        for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
        if "uv pip compile" in line and "-o requirements.lock" in line
    ]
    assert (
        "--extra dashboard --extra tracing " in image_lock and "--no-emit-index-url" in image_lock
    )


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git"} <= ignored


# ---- .env.example -------------------------------------------------------------------------


def test_env_example_lists_every_config_variable() -> None:
    missing = sorted(set(CONFIG_VARIABLES) - set(env_example()))
    assert not missing, f".env.example does not list {missing}"


def test_env_example_lists_no_unknown_variable() -> None:
    unknown = sorted(
        set(env_example()) - set(CONFIG_VARIABLES) - COMPOSE_ONLY - set(DASHBOARD_VARIABLES)
    )
    assert not unknown, f".env.example lists variables nothing reads: {unknown}"


def test_env_example_defaults_are_the_config_defaults() -> None:
    entries = env_example()
    for name, field in CONFIG_VARIABLES.items():
        commented, value = entries[name]
        default = Config.model_fields[field].default
        if default is None:
            assert commented and value == "", f".env.example: write `# {name}=` (no default)"
            continue
        assert not commented, f".env.example: {name} is commented out but has a default"
        parsed = parse_as(field, value)
        assert parsed == default, f".env.example: {name}={value!r}, default {default!r}"


def test_the_dashboard_gets_its_settings_with_their_defaults(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment_of(services["dashboard"])
    entries = env_example()
    for name, field in DASHBOARD_VARIABLES.items():
        default = DashboardSettings.model_fields[field].default
        assert entries.get(name) == (False, default), f".env.example: {name}={default}"
        assert env.get(name) == f"${{{name}:-{default}}}", f"the dashboard service: {name}"
    # No anonymous dashboard in compose: it listens on the container network.
    assert env["DASHBOARD_AUTH"] == "${DASHBOARD_AUTH:-basic}"


def test_env_example_compose_variables_match_the_compose_defaults(
    compose: dict[str, Any],
) -> None:
    entries = env_example()
    found: dict[str, set[tuple[str, str]]] = {}
    for name, op, arg in (d for text in strings_in(compose) for d in defaults_in(text)):
        found.setdefault(name, set()).add((op, arg))
    for name in sorted(COMPOSE_ONLY):
        assert name in entries, f".env.example does not list {name}"
        assert name in found, f"docker-compose.yml does not use {name}"
        commented, value = entries[name]
        assert not commented, f".env.example: {name} is commented out"
        if name in REQUIRED_COMPOSE_VARIABLES:
            assert value == "", f".env.example must not ship a value for {name}"
            continue
        assert found[name] == {(":-", value)}, f"{name}: .env.example {value!r}, {found[name]}"
