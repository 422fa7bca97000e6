"""deploy/Dockerfile, read without a Docker engine: what the image must be, from its text."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(items: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for item in items:
        if item.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(item)
    return out


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return stages(instructions(DOCKERFILE.read_text()))[-1]


def test_the_image_runs_as_an_unprivileged_user(final_stage: list[Instruction]) -> None:
    users = [i.args for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_image_has_a_health_check(final_stage: list[Instruction]) -> None:
    (check,) = [i.args for i in final_stage if i.keyword == "HEALTHCHECK"]
    assert " CMD " in f" {check} " and not check.upper().startswith("NONE")


def test_the_entrypoint_is_the_cli_and_the_default_worker_serves_metrics_outside(
    final_stage: list[Instruction],
) -> None:
    (entry,) = [json.loads(i.args) for i in final_stage if i.keyword == "ENTRYPOINT"]
    (cmd,) = [json.loads(i.args) for i in final_stage if i.keyword == "CMD"]
    assert entry == ["inventory-streams"]
    assert cmd[0] == "worker" and cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"


def test_every_copied_path_exists_in_the_repository() -> None:
    copies = [i for i in instructions(DOCKERFILE.read_text()) if i.keyword in ("COPY", "ADD")]
    assert copies
    for copy in copies:
        words = shlex.split(copy.args)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not from the build context
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_the_core_is_compiled_and_the_build_fails_without_it() -> None:
    build = " ".join(i.args for i in stages(instructions(DOCKERFILE.read_text()))[0])
    assert "bin/build-core" in build
    assert "compiled_modules()" in build  # bin/build-core alone falls back to Python silently


def test_settings_paths_point_outside_the_package(final_stage: list[Instruction]) -> None:
    env = " ".join(i.args for i in final_stage if i.keyword == "ENV")
    values = dict(word.split("=", 1) for word in shlex.split(env) if "=" in word)
    for name in ("DATA_DIR", "CATALOG_FILE"):
        assert not values[name].startswith("/opt/inventory-streams"), name
    (workdir,) = [i.args for i in final_stage if i.keyword == "WORKDIR"]
    assert workdir == values["DATA_DIR"]  # ./var and DATA_DIR: both the user's own directory


def test_every_package_the_project_installs_is_copied_into_the_image() -> None:
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    copied = {
        shlex.split(i.args)[0]
        for i in instructions(DOCKERFILE.read_text())
        if i.keyword == "COPY" and not i.args.startswith("--")
    }
    for pattern in include:
        package = pattern.rstrip("*")
        assert package in copied, f"the image installs {package} but never copies it"
