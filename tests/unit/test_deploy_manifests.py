"""The Kubernetes manifests in deploy/kubernetes/ are valid against Kubernetes' own schemas
(kubernetes-validate bundles them, strict: no unknown field) and agree with what Forge serves."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
VERSION = "1.33.0"
"""The oldest Kubernetes these manifests are checked against (HPA v2 and PDB v1 long stable there)."""


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_manifest_is_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_a_broken_manifest_would_be_caught():
    doc = next(d for d in documents() if d["kind"] == "Deployment")
    broken = {**doc, "spec": {**doc["spec"], "replica": 2}}  # a typo of replicas
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_manifests_agree_with_the_servers():
    from voiceforge.config import Settings

    docs = {(d["kind"], d["metadata"]["name"]): d for d in documents()}
    config = docs[("ConfigMap", "forge-config")]["data"]
    names = {n.upper() for n in Settings.model_fields}
    assert set(config) <= names, set(config) - names  # every variable is a Forge setting
    pod = docs[("Deployment", "forge-sidecar")]["spec"]["template"]["spec"]
    (sidecar,) = pod["containers"]
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/ready"  # 503 while draining or overloaded
    assert pod["terminationGracePeriodSeconds"] > float(config["FORGE_DRAIN_S"])  # the drain fits
    hpa = docs[("HorizontalPodAutoscaler", "forge-sidecar")]["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "forge_load"
    assert "forge_load" in (ROOT / "server" / "metrics.py").read_text()  # the gauge /metrics serves
    assert docs[("PodDisruptionBudget", "forge-sidecar")]["spec"]["selector"]["matchLabels"] == \
        docs[("Deployment", "forge-sidecar")]["spec"]["selector"]["matchLabels"]


def test_the_scaled_compose_file_agrees_with_nginx_and_the_settings():
    """deploy/docker-compose.scale.yml: nginx's upstreams are its sidecars, each a distinct instance
    with Redis, and every variable it sets is a Forge setting (the YAML merge keys resolved)."""
    import re

    from voiceforge.config import Settings

    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.scale.yml").read_text())
    services = compose["services"]
    nginx_conf = (ROOT / "deploy" / "nginx" / "forge.conf").read_text()
    mounted = services["nginx"]["volumes"][0].split(":")[0]
    assert (ROOT / "deploy" / mounted).resolve() == (ROOT / "deploy" / "nginx" / "forge.conf")
    upstreams = re.findall(r"^\s*server ([\w.-]+):(\d+)", nginx_conf, re.M)
    sidecars = {name: s for name, s in services.items() if "serve" in s.get("command", [])}
    assert {host for host, _ in upstreams} == set(sidecars)
    listen = re.search(r"listen (\d+);", nginx_conf).group(1)
    assert services["nginx"]["ports"] == [f"8765:{listen}"]
    names = {n.upper() for n in Settings.model_fields}
    instances = set()
    for name, service in sidecars.items():
        env = service["environment"]
        assert env["REDIS_URL"] and env["DATABASE_URL"].startswith("postgresql://")
        assert service["command"][-1] == dict(upstreams)[name]  # it listens where nginx sends
        instances.add(env["FORGE_INSTANCE"])
        assert set(env) <= names, set(env) - names
    assert len(instances) == len(sidecars)  # sidecars sharing a database need different names
    models = services["models"]["command"]
    assert env["OPENAI_BASE_URL"] == f"http://models:{models[models.index('--port') + 1]}/v1"
    for service in ("models", "app"):
        assert set(services[service]["environment"]) <= names
