"""docker-compose.yml, Dockerfile and .env.example: services, secrets, worker command.

No Docker engine is needed: the compose file is read as YAML, its variables are
filled in from .env.example the way ``docker compose`` does, and the worker's
command runs against the local PostgreSQL server.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from test_workers import load_trials

from search.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def read_env_example() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Fill in ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` as compose does."""

    def fill(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator == "-":
            return argument
        raise KeyError(f"{name} is not set ({argument})")

    return VARIABLE.sub(fill, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_names_the_three_services(compose):
    assert set(compose["services"]) == {"postgres", "dashboard", "worker"}
    assert "postgres-data" in compose["volumes"]
    volumes = compose["services"]["postgres"]["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in volumes


def test_compose_postgres_health_check(compose):
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for name in ("dashboard", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_compose_publishes_on_loopback_only(compose):
    env = read_env_example()
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert interpolate(port, env).startswith("127.0.0.1:"), (name, port)
    # Scaled workers could not all publish the same host port.
    assert "ports" not in compose["services"]["worker"]


def test_compose_password_comes_from_environment(compose):
    postgres = compose["services"]["postgres"]
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")
    env = read_env_example()
    assert env["POSTGRES_PASSWORD"]
    for name in ("docker-compose.yml", "Dockerfile"):
        text = (REPO / name).read_text(encoding="utf-8")
        assert env["POSTGRES_PASSWORD"] not in text, name
    assert "PASSWORD" not in (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert ".env" in (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(password, {})


def test_compose_dockerfile_installs_cpu_torch_first():
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    installs = [line for line in lines if line.startswith("RUN pip install")]
    assert "torch==2.13.0" in installs[0]
    assert "download.pytorch.org/whl/cpu" in installs[0]
    assert "postgresql" in installs[1]


def worker_command(compose) -> list[str]:
    env = read_env_example()
    command = compose["services"]["worker"]["command"]
    return [interpolate(part, env) for part in command]


def test_compose_worker_command_parses(compose):
    command = worker_command(compose)
    assert command[:3] == ["python", "-m", "search"]

    args = build_parser().parse_args(command[3:])

    assert args.command == "run"
    assert args.study == "steplr"
    assert args.storage.startswith("postgresql+psycopg://search:")
    assert args.storage.endswith("@postgres:5432/search")


def test_compose_worker_command_runs(compose, postgresql_url, write_study, capsys):
    command = worker_command(compose)[3:]
    study = write_study(n_trials=2, max_epochs=1, sampler="random")
    command[command.index("--study") + 1] = str(study)
    command[command.index("--storage") + 1] = postgresql_url

    assert main(command) == 0

    trials = load_trials(postgresql_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert "trial   1" in capsys.readouterr().out
