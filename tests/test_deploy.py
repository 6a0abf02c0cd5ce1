"""The Kubernetes manifests, validated against the Kubernetes API schemas (kubernetes-validate ships
them; no cluster needed), and their probes checked against the routes the real app serves."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT

K8S = ROOT / "deploy" / "kubernetes"
VERSION = "1.37.0"
# KServe's predictor is a core PodSpec plus these component-extension fields (KServe v1beta1 API).
KSERVE_EXTENSION = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
                    "canaryTrafficPercent", "labels", "annotations", "logger", "batcher", "deploymentStrategy"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def core_manifests() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@pytest.mark.parametrize("path", core_manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schema(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, VERSION, strict=True)  # raises on any invalid or unknown field


def test_a_broken_manifest_is_rejected():
    deployment = documents(K8S / "deployment.yaml")[0]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_inference_service_predictor_is_a_valid_pod_spec():
    (isvc,) = documents(K8S / "kserve" / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_EXTENSION}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]}, "spec": pod_spec}
    kubernetes_validate.validate(pod, VERSION, strict=True)
    assert predictor["minReplicas"] <= predictor["maxReplicas"]


def test_deployment_service_and_autoscaler_fit_together():
    deployment, service, hpa = (documents(K8S / f"{n}.yaml")[0] for n in ("deployment", "service", "hpa"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert {"requests", "limits"} <= set(container["resources"])
    port_names = {p["name"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def probe_paths() -> list[str]:
    deployment = documents(K8S / "deployment.yaml")[0]
    (isvc,) = documents(K8S / "kserve" / "inferenceservice.yaml")
    containers = deployment["spec"]["template"]["spec"]["containers"] + isvc["spec"]["predictor"]["containers"]
    return sorted({c[probe]["httpGet"]["path"] for c in containers for probe in c if probe.endswith("Probe")})


@pytest.mark.parametrize("path", probe_paths())
def test_probes_hit_routes_the_service_answers(client, path):
    assert client.get(path).status_code == 200
