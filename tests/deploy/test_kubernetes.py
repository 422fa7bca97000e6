"""deploy/k8s (rendered through deploy/kustomization.yaml): every manifest is valid against the
newest Kubernetes schema kubernetes-validate ships (offline), both as kustomize renders it (with
`kubectl kustomize` or `kustomize`, when installed) and as this test's own small renderer does
(resources and configMapGenerator, no name hashes), so the check runs without either tool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from inventory_streams.cli import build_parser
from tests.deploy.helpers import DEPLOY, run, tool

kubernetes_validate = pytest.importorskip("kubernetes_validate")

KUSTOMIZATION_DIR = DEPLOY
HEALTH_PATHS = {"/health", "/metrics"}  # the API and the webhook receiver; metrics


def render_by_hand(directory: Path) -> list[dict[str, Any]]:
    """What kustomize makes of resources and configMapGenerator, names unhashed."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            docs.extend(render_by_hand(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for generator in kustomization.get("configMapGenerator", []):
        data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        for spec in generator.get("files", []):
            key, _, source = spec.rpartition("=")
            data[key or Path(source).name] = (directory / source).read_text()
        metadata = {"name": generator["name"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] != "Namespace":
            doc["metadata"].setdefault("namespace", namespace)
    return docs


def render_with_kustomize() -> list[dict[str, Any]] | None:
    kubectl, kustomize = tool("kubectl"), tool("kustomize")
    if kubectl:
        result = run(kubectl, "kustomize", str(KUSTOMIZATION_DIR))
    elif kustomize:
        result = run(kustomize, "build", str(KUSTOMIZATION_DIR))
    else:
        return None
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


BY_HAND = render_by_hand(KUSTOMIZATION_DIR)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("StatefulSet", "Deployment", "Job")]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("doc", BY_HAND, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_valid_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_kustomize_rendering_is_valid_too() -> None:
    docs = render_with_kustomize()
    if docs is None:
        pytest.skip("neither kubectl nor kustomize is installed: the hand renderer's check stands")
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    kinds = sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in docs)
    assert kinds == sorted((d["kind"], d["metadata"]["name"]) for d in BY_HAND)
    # the generated (hashed) ConfigMap names are the ones the pods mount
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    for workload in workloads(docs):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in names


def test_the_parts_are_there() -> None:
    (worker,) = by_kind(BY_HAND, "StatefulSet")
    (connect,) = by_kind(BY_HAND, "Deployment")
    (job,) = by_kind(BY_HAND, "Job")
    assert worker["spec"]["replicas"] >= 2
    claims = {c["metadata"]["name"] for c in worker["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in containers(worker)[0]["volumeMounts"]}
    assert claims & set(mounts), "the workers' state volume is not mounted"
    env = {e["name"]: e.get("value") for e in containers(worker)[0].get("env", [])}
    assert "CHANNEL_TOKENS" in env
    assert containers(connect)[0]["args"][0] == "connect"
    assert "topics" in containers(job)[0]["args"][0] and "catalog" in containers(job)[0]["args"][0]
    services = {s["metadata"]["name"]: s for s in by_kind(BY_HAND, "Service")}
    api = services["inventory-api"]
    assert api["spec"]["selector"] == worker["spec"]["selector"]["matchLabels"]
    (pdb,) = by_kind(BY_HAND, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


def test_the_catalog_config_map_is_deploy_catalog_yaml() -> None:
    (catalog,) = [
        d for d in by_kind(BY_HAND, "ConfigMap") if d["metadata"]["name"] == "inventory-catalog"
    ]
    assert catalog["data"]["catalog.yaml"] == (DEPLOY / "catalog.yaml").read_text()
    for workload in workloads(BY_HAND):
        if workload["kind"] == "Deployment":
            continue  # connect follows inventory.catalog
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        assert {"name": "catalog", "configMap": {"name": "inventory-catalog"}} in volumes


def test_credentials_come_from_secret_references_only() -> None:
    assert not by_kind(BY_HAND, "Secret"), "no secret value belongs in the repository"
    for workload in workloads(BY_HAND):
        for container in containers(workload):
            secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
            assert "inventory-kafka-credentials" in secrets
            assert "inventory-schema-registry-credentials" in secrets
            for source in container["envFrom"]:
                if "secretRef" in source:
                    assert source["secretRef"]["optional"] is True


def test_every_container_has_requests_limits_and_probes_on_real_endpoints() -> None:
    for workload in workloads(BY_HAND):
        for container in containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), name
            if workload["kind"] == "Job":
                continue
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] in HEALTH_PATHS, name
                assert get["port"] in ports, name
            args = container["args"]
            served = {
                ("/health", f"--api-port={ports.get('api')}"),
                ("/metrics", f"--metrics-port={ports.get('metrics')}"),
            }
            for path, flag in served:
                if any(
                    container[p]["httpGet"]["path"] == path
                    for p in ("livenessProbe", "readinessProbe")
                ):
                    assert flag in args, f"{name} probes {path} but does not serve it"


def test_every_container_runs_as_the_image_user() -> None:
    user = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert user
    for workload in workloads(BY_HAND):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))


def test_every_command_parses_with_the_real_cli() -> None:
    parser = build_parser()
    for workload in workloads(BY_HAND):
        for container in containers(workload):
            if container.get("command") == ["sh", "-c"]:
                lines = [p.split()[1:] for p in container["args"][0].split("&&")]
            else:
                lines = [container["args"]]
            for line in lines:
                try:
                    parser.parse_args(line)
                except SystemExit:
                    pytest.fail(f"{workload['metadata']['name']}: inventory-streams {line}")
