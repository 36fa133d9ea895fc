"""docker-compose.yml and deploy/ checked against the code, without a Docker engine: the commands name
real services, every variable a container sets is one its settings read, ports agree everywhere,
start order waits on health, and no secret is committed. A rename in the code fails here first."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from hub.cli import SERVICE_NAMES
from hub.serve import SERVICES as SERVE_TARGETS
from shared.settings import SERVICE_PORTS, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
CONTAINERS: dict[str, dict] = COMPOSE["services"]
ENGINES = ("kafka", "clickhouse", "postgres")
# Read outside the settings classes: OTEL_* by shared/telemetry.py, HUB_LOG_LEVEL by hub/serve.py.
READ_ELSEWHERE = ("HUB_LOG_LEVEL",)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|API_KEY|TOKEN", re.I)
REQUIRED_SUBSTITUTION = re.compile(r"\$\{\w+:?\?[^}]*\}")   # ${NAME:?message}: no default to leak
SUBSTITUTION_WITH_DEFAULT = re.compile(r"\$\{(\w+):?-([^}]*)\}")
SUBSTITUTION = re.compile(r"\$\{[^}]*\}")


def _command(container: dict) -> list[str]:
    command = container.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def _hub_service(container: dict) -> str | None:
    """X when the container runs `hub serve X`."""
    command = _command(container)
    return command[2] if command[:2] == ["hub", "serve"] and len(command) == 3 else None


HUB_CONTAINERS = {name: c for name, c in CONTAINERS.items() if _hub_service(c)}


def _environment(container: dict) -> dict[str, str | None]:
    env = container.get("environment") or {}
    if isinstance(env, list):  # list syntax: NAME=value or bare NAME (pass-through)
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: None if v is None else str(v) for k, v in env.items()}


def _settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, ServiceSettings) and c is not ServiceSettings and c.__module__ == module.__name__]
    assert len(found) == 1, f"services.{service}.settings should define one ServiceSettings subclass: {found}"
    return found[0]


def _env_names_read(settings: type[ServiceSettings]) -> set[str]:
    """Environment names pydantic-settings reads for the class: an alias replaces the prefixed name."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def _container_port(mapping) -> int:
    if isinstance(mapping, dict):  # long syntax
        return int(mapping["target"])
    return int(str(mapping).split("/")[0].rsplit(":", 1)[-1])


def _host_port(mapping) -> int:
    if isinstance(mapping, dict):
        return int(mapping["published"])
    parts = str(mapping).split("/")[0].split(":")
    return int(parts[-2] if len(parts) > 1 else parts[-1])


def _url(value: str) -> tuple[str | None, str | None]:
    """(hostname, password) of a URL that may contain ${...} (whose `?` would otherwise start a query)."""
    found = SUBSTITUTION.findall(value)
    parts = urlsplit(SUBSTITUTION.sub(lambda m: f"subst{found.index(m.group())}", value))
    password = parts.password
    return parts.hostname, (found[int(password[5:])] if password and password.startswith("subst") else password)


def _healthcheck_command(container: dict) -> str:
    test = (container.get("healthcheck") or {}).get("test") or []
    return test if isinstance(test, str) else " ".join(test)


def test_compose_runs_each_of_the_five_services_in_its_own_container():
    assert sorted(_hub_service(c) for c in HUB_CONTAINERS.values()) == sorted(SERVICE_PORTS)
    assert set(HUB_CONTAINERS) == set(SERVICE_PORTS), "containers are named after the service they run"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_hub_serve_command_names_a_service_with_an_app_factory(container):
    service = _hub_service(HUB_CONTAINERS[container])
    assert service in SERVICE_NAMES, f"`hub serve {service}` is refused by the CLI"
    assert SERVE_TARGETS[service] == f"services.{service}.app:create_app"
    assert importlib.util.find_spec(f"services.{service}.app") is not None
    assert callable(getattr(importlib.import_module(f"services.{service}.app"), "create_app", None))


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_every_variable_set_on_a_service_is_read_by_its_settings(container):
    service = _hub_service(HUB_CONTAINERS[container])
    read = _env_names_read(_settings_class(service))
    unread = [name for name in _environment(HUB_CONTAINERS[container])
              if name.upper() not in read and not name.startswith("OTEL_") and name not in READ_ELSEWHERE]
    assert not unread, f"{container} sets {unread}, which nothing in {service} reads"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_service_port_agrees_with_published_port_healthcheck_and_default(container):
    c = HUB_CONTAINERS[container]
    service = _hub_service(c)
    env = _environment(c)
    port = int(env[f"{service.upper()}_PORT"])
    assert port == SERVICE_PORTS[service]
    assert [_container_port(p) for p in c.get("ports", [])] == [port]
    assert [_host_port(p) for p in c.get("ports", [])] == [port]
    probed = re.findall(r"127\.0\.0\.1:(\d+)/readyz", _healthcheck_command(c))
    assert probed == [str(port)], f"{container} healthcheck probes {probed}, serves on {port}"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_service_binds_all_interfaces_inside_its_container(container):
    # hub serve defaults to 127.0.0.1, which a published port cannot reach.
    service = _hub_service(HUB_CONTAINERS[container])
    assert _environment(HUB_CONTAINERS[container]).get(f"{service.upper()}_HOST") == "0.0.0.0"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_service_container_is_healthy_only_when_ready(container):
    assert "/readyz" in _healthcheck_command(HUB_CONTAINERS[container])


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_has_a_healthcheck(engine):
    check = CONTAINERS[engine].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{engine} has no healthcheck"


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_every_dependency_waits_for_a_healthy_container(container):
    depends_on = CONTAINERS[container].get("depends_on") or {}
    assert isinstance(depends_on, dict), f"{container}: list-form depends_on only waits for start"
    for target, rule in depends_on.items():
        assert target in CONTAINERS, f"{container} depends on unknown {target}"
        assert (rule or {}).get("condition") == "service_healthy", f"{container} -> {target}"
        assert _healthcheck_command(CONTAINERS[target]), f"{target} can never become healthy"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_every_engine_a_service_connects_to_is_a_healthy_dependency(container):
    env = _environment(HUB_CONTAINERS[container])
    hosts = {server.rsplit(":", 1)[0] for server in (env.get("KAFKA_BOOTSTRAP_SERVERS") or "").split(",") if server}
    hosts |= {_url(env[name])[0] for name in ("DATABASE_URL", "CLICKHOUSE_URL") if env.get(name)}
    missing = hosts - set(HUB_CONTAINERS[container].get("depends_on") or {})
    assert hosts and not missing, f"{container} connects to {sorted(missing)} without waiting for it"


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_no_secret_is_committed(container):
    for name, value in _environment(CONTAINERS[container]).items():
        if value is None:
            continue  # pass-through from the shell
        if SECRET_NAME.search(name):
            assert REQUIRED_SUBSTITUTION.fullmatch(value), f"{container}.{name} must be ${{{name}:?...}}"
        password = _url(value)[1] if "://" in value else None
        if password is not None:
            assert REQUIRED_SUBSTITUTION.fullmatch(password), f"{container}.{name} embeds a password"
        for var, default in SUBSTITUTION_WITH_DEFAULT.findall(value):
            assert not (SECRET_NAME.search(var) and default), f"{container}.{name} defaults {var}"


@pytest.mark.parametrize("container", sorted(HUB_CONTAINERS))
def test_service_runs_in_production_mode_with_a_required_auth_secret(container):
    env = _environment(HUB_CONTAINERS[container])
    assert env.get("HUB_ENV") == "production"
    assert REQUIRED_SUBSTITUTION.fullmatch(env.get("HUB_AUTH_SECRET") or "")


def test_services_export_traces_to_the_collectors_http_receiver():
    collector = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    http_port = int(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1])
    mounted = [v.split(":")[0] for v in CONTAINERS["otel-collector"]["volumes"]]
    assert "./deploy/otel/collector.yaml" in mounted
    assert "otlp" in collector["service"]["pipelines"]["traces"]["receivers"]
    for name, c in HUB_CONTAINERS.items():
        endpoint = urlsplit(_environment(c)["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.hostname, endpoint.port) == ("otel-collector", http_port), name
        assert _environment(c)["OTEL_SERVICE_NAME"] == name


def test_image_is_built_from_the_dockerfile_and_keeps_the_clickhouse_ddl_reachable():
    from services.insights.warehouse import MIGRATIONS_DIR

    for name, c in HUB_CONTAINERS.items():
        assert (ROOT / c["build"]["context"] / c["build"]["dockerfile"]) == ROOT / "deploy/Dockerfile", name
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith("#")]
    users = [args.strip() for op, *rest in instructions if op == "USER" for args in rest]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    # The DDL is found relative to warehouse.py; outside the packages it is only there when the
    # code runs from the copied tree (editable install) and that tree includes the directory.
    ddl = MIGRATIONS_DIR.resolve().relative_to(ROOT).as_posix()
    if ddl.split("/")[0] not in ("shared", "services", "hub"):
        assert re.search(r"pip install (-e|--editable) \.", dockerfile), "a plain install drops " + ddl
        assert re.search(rf"^COPY (\S+ )*{re.escape(ddl)}(/)? ", dockerfile, re.M), f"{ddl} is not copied"
