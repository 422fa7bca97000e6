"""docker-compose.yml: the compose tool accepts it (`docker compose config`, or Debian's v1
`docker-compose config`; skipped, and said so, when neither is installed), the services are the
ones the README's Deploy section names, and every command of ours parses with the real CLI."""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

import pytest
import yaml

from inventory_streams.cli import build_parser
from tests.deploy.helpers import ROOT, run, tool

COMPOSE_FILE = ROOT / "docker-compose.yml"
OUR_IMAGE = "inventory-streams:local"


def compose_command() -> list[str] | None:
    docker = tool("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = tool("docker-compose")
    return [legacy] if legacy else None


COMPOSE = compose_command()


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return data


def readme_services() -> set[str]:
    """The first column of the service table in README's "Deploy" → "Docker Compose" section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^### Docker Compose\n(.*?)(?=^#{2,3} |\Z)", text, re.M | re.S)
    assert section, 'README.md has no "### Docker Compose" section'
    names = re.findall(r"^\| `([a-z0-9-]+)` \|", section.group(1), re.M)
    assert names, "the README's compose section has no service table"
    return set(names)


@pytest.mark.skipif(
    COMPOSE is None,
    reason="neither `docker compose` nor `docker-compose` is installed "
    "(apt-get install docker-compose)",
)
def test_the_compose_tool_accepts_the_file() -> None:
    assert COMPOSE is not None
    result = run(*COMPOSE, "-f", str(COMPOSE_FILE), "config")
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == set(yaml.safe_load(COMPOSE_FILE.read_text())["services"])
    for name in ("worker-1", "worker-2", "connect", "setup"):  # env_file read and merged
        env = rendered["services"][name]["environment"]
        assert env["CHANNEL_TOKENS"].startswith("{"), name
        assert env["SCHEMA_REGISTRY_URL"] == "http://schema-registry:8081", name


def test_the_readme_names_every_service_and_only_those(services: dict[str, Any]) -> None:
    assert readme_services() == set(services)


def test_the_stack_has_every_part(services: dict[str, Any]) -> None:
    images = {name: str(service.get("image", "")) for name, service in services.items()}
    assert images["kafka"].startswith("apache/kafka")
    assert "schema-registry" in images["schema-registry"] or "karapace" in images["schema-registry"]
    assert images["prometheus"].startswith("prom/prometheus")
    assert images["grafana"].startswith("grafana/grafana")
    workers = [
        name for name, service in services.items() if service.get("command", [""])[0] == "worker"
    ]
    assert len(workers) == 2


def test_kafka_is_durable_and_reachable_from_the_host(services: dict[str, Any]) -> None:
    kafka = services["kafka"]["environment"]
    assert {"broker", "controller"} <= set(kafka["KAFKA_PROCESS_ROLES"].split(","))
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert any(a.endswith("//localhost:9092") for a in advertised), advertised
    internal = [a for a in advertised if "//kafka:" in a]
    assert internal, advertised
    assert "9092:9092" in services["kafka"]["ports"]
    volume, _, path = services["kafka"]["volumes"][0].partition(":")
    assert volume in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]  # named, not a bind
    assert path == kafka["KAFKA_LOG_DIRS"]
    # what our processes use is the in-network listener
    host_port = internal[0].split("//", 1)[1]
    for name, service in services.items():
        if service.get("image") == OUR_IMAGE:
            assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == host_port, name


def test_every_process_of_ours_gets_the_schema_registry(services: dict[str, Any]) -> None:
    ours = [s for s in services.values() if s.get("image") == OUR_IMAGE]
    assert len(ours) == 4  # setup, two workers, connect
    for service in ours:
        url = service["environment"]["SCHEMA_REGISTRY_URL"]
        assert url.startswith("http://schema-registry:")


def our_commands(services: dict[str, Any]) -> list[list[str]]:
    commands = []
    for service in services.values():
        if service.get("image") != OUR_IMAGE:
            continue
        if service.get("command"):
            commands.append([str(word) for word in service["command"]])
        entry = service.get("entrypoint")
        if entry:  # sh -c "inventory-streams a && inventory-streams b"
            for part in entry[-1].split("&&"):
                words = shlex.split(part)
                assert words[0] == "inventory-streams", part
                commands.append(words[1:])
    return commands


def test_every_command_of_ours_parses_with_the_real_cli(services: dict[str, Any]) -> None:
    parser = build_parser()
    for command in our_commands(services):
        try:
            parser.parse_args(command)
        except SystemExit:
            pytest.fail(f"inventory-streams {' '.join(command)}: not a valid command line")


def test_the_api_connect_and_metrics_are_published(services: dict[str, Any]) -> None:
    for name in ("worker-1", "worker-2"):
        command = services[name]["command"]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
        container_ports = {p.split(":")[-1] for p in services[name]["ports"]}
        assert {
            command[command.index("--api-port") + 1],
            command[command.index("--metrics-port") + 1],
        } <= container_ports
        assert command[command.index("--api-url") + 1] == f"http://{name}:8080"
    connect = services["connect"]["command"]
    assert connect[connect.index("--metrics-port") + 1] in {
        p.split(":")[-1] for p in services["connect"]["ports"]
    }


def test_host_ports_do_not_collide(services: dict[str, Any]) -> None:
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports


def test_every_bind_mount_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
        for env_file in service.get("env_file", []):
            assert (ROOT / env_file).is_file(), f"{name}: {env_file}"
