"""helm/histoprompt: lint, render, validate against Kubernetes 1.31 schemas and, for the custom
resources (ServiceMonitor, PrometheusRule, KEDA), against their CRDs (tests/unit/assets/crds,
strict), all offline; and check what schemas cannot: the values schema's refusals, security
settings, secrets, wiring between objects.

helm is the pinned `go install` build from `make install-helm` (.cache/go/bin/helm); when it
is missing the fixture builds it with deploy/install/helm.sh and fails (never skips) if
that does not work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from histoprompt.core import names
from histoprompt.core.settings import ConnectionSettings
from histoprompt.ingest.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "histoprompt"
PROD_VALUES = CHART / "ci" / "production-values.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "histoprompt.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "histoprompt-dashboard.json"
KUBE_VERSION = "1.31.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
RELEASE = "hp"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def _makefile_helm_version() -> str:
    match = re.search(r"^HELM_VERSION\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile lost its HELM_VERSION pin"
    return match.group(1)


def _build_info(binary: Path) -> str:
    go = shutil.which("go")
    if go is None or not binary.is_file():
        return ""
    return subprocess.run(
        [go, "version", "-m", str(binary)], capture_output=True, text=True, check=False
    ).stdout


def _built_version(binary: Path) -> str | None:
    """The helm module version a `go install` build embeds (`helm version` says only v3.16),
    or None when the build lacks the Kubernetes-version ldflags the official release sets
    (without them helm assumes Kubernetes v1.20.0 and refuses this chart's kubeVersion)."""
    out = _build_info(binary)
    match = re.search(r"^\s*mod\s+helm\.sh/helm/v3\s+(\S+)", out, re.M)
    if not match or "chartutil.k8sVersionMinor=" not in out:
        return None
    return match.group(1)


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm binary; built with deploy/install/helm.sh when it is missing."""
    gopath = ROOT / ".cache" / "go"
    binary = gopath / "bin" / "helm"
    pinned = _makefile_helm_version()
    if _built_version(binary) != pinned:
        result = subprocess.run(
            ["bash", str(ROOT / "deploy" / "install" / "helm.sh"), pinned, str(gopath)],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if result.returncode != 0 or _built_version(binary) != pinned:
            pytest.fail(
                f"could not build helm {pinned} (make install-helm):\n{result.stderr[-3000:]}"
            )
    return str(binary)


def _run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """`helm template` with optional values files and --set flags, as parsed manifests."""
    cache: dict[tuple[Any, ...], list[Manifest]] = {}

    def _render(*values_files: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
        key = (values_files, sets)
        if key not in cache:
            args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
            for path in values_files:
                args += ["-f", str(path)]
            for item in sets:
                args += ["--set", item]
            result = _run_helm(helm, *args)
            assert result.returncode == 0, result.stderr
            cache[key] = [d for d in yaml.safe_load_all(result.stdout) if d]
        return cache[key]

    return _render


def _by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [d for d in _by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def _env(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def _pod_specs(docs: list[Manifest]) -> list[tuple[str, Manifest]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}
    ]


VALUE_SETS = {"default": (), "production": (PROD_VALUES,)}


# --- helm lint and Kubernetes schemas ---------------------------------------------------


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_lint_strict(helm: str, values: str) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    for path in VALUE_SETS[values]:
        args += ["-f", str(path)]
    result = _run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_renders_without_kube_version_as_a_new_user_would(helm: str) -> None:
    """`helm template t helm/histoprompt` with no --kube-version: a `go install` helm without
    the release's chartutil ldflags assumes Kubernetes v1.20.0 and fails on kubeVersion."""
    for args in (["template", "t", str(CHART)], ["lint", "--strict", str(CHART)]):
        result = _run_helm(helm, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    ldflags = re.search(r"-ldflags=\"?([^\n\"]*)", _build_info(Path(helm)))
    assert ldflags, "helm was built without ldflags"
    minor = re.search(r"chartutil\.k8sVersionMinor=(\d+)", ldflags.group(1))
    assert minor and int(minor.group(1)) >= 27, ldflags.group(1)
    assert "lint/rules.k8sVersionMinor=" in ldflags.group(1)


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as a strict JSON schema: objects with `properties` refuse
    unknown fields (kubeconform -strict does the same), unless the CRD preserves them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator of the vendored CRD schemas (tests/unit/assets/crds)."""
    import jsonschema

    validators = {}
    for path in sorted((ROOT / "tests" / "unit" / "assets" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            validators[key] = jsonschema.Draft7Validator(schema)
    return validators


CRDS = _crd_validators()


def _validate(doc: Manifest) -> None:
    """Core kinds against the Kubernetes schemas; custom resources against their CRD."""
    if doc["kind"] in CRD_KINDS:
        validator = CRDS[(doc["apiVersion"], doc["kind"])]
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_rendered_objects_validate_against_kubernetes_schemas(render: Render, values: str) -> None:
    docs = render(*VALUE_SETS[values])
    validated: list[str] = []
    for doc in docs:
        _validate(doc)
        validated.append(doc["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= set(validated)
    assert validated.count("Deployment") == 2
    if values == "production":
        assert set(validated) >= CRD_KINDS, "every custom resource kind validated"


@pytest.mark.parametrize(
    "sets",
    [
        ("autoscaling.keda.enabled=true",),
        ("autoscaling.keda.enabled=true", "autoscaling.keda.minReplicas=0"),
        ("monitoring.prometheusRule.enabled=true", "monitoring.kafkaExporterLag.enabled=true"),
        ("monitoring.serviceMonitor.enabled=true",),
    ],
    ids=["keda", "keda-to-zero", "exporter-lag", "service-monitors"],
)
def test_custom_resources_validate_against_their_crds(
    render: Render, sets: tuple[str, ...]
) -> None:
    docs = [d for d in render(sets=sets) if d["kind"] in CRD_KINDS]
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ScaledObject", ("spec", "maxReplicaCount"), "twenty"),
        ("ScaledObject", ("spec", "advanced", "horizontalPodAutoscalerConfig", "behaviour"), {}),
        ("ServiceMonitor-triton", ("spec", "endpoints", 0, "scrapeInterval"), "15s"),
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0, "expr"), ["x"]),
    ],
)
def test_crd_validation_catches_a_broken_resource(
    render: Render, kind: str, path: tuple[Any, ...], value: Any
) -> None:
    """The CRD schemas are no rubber stamp: a wrong type or a misspelt field fails."""
    kind, _, suffix = kind.partition("-")
    doc = json.loads(json.dumps(_one(render(PROD_VALUES), kind, suffix)))
    _validate(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(AssertionError):
        _validate(doc)


def test_kubernetes_validate_catches_a_broken_manifest(render: Render) -> None:
    """The validator is not a rubber stamp: a wrong type in a rendered Deployment fails."""
    deployment = json.loads(json.dumps(_one(render(), "Deployment", "-ingest")))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_production_values_render_every_component(render: Render) -> None:
    kinds = sorted(d["kind"] for d in render(PROD_VALUES))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Job",
            "NetworkPolicy",
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "PrometheusRule",
            "ScaledObject",
            "Service",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "ServiceMonitor",
            "TriggerAuthentication",
        ]
    )


# --- values schema ------------------------------------------------------------------------

BAD_VALUES = [
    ("triton.replicas=-1", "triton.replicas"),
    ("ingest.replicas=-3", "ingest.replicas"),
    ("triton.modelRepository.uri=null", "uri is required"),
    ("triton.modelRepository.uri=", "triton.modelRepository.uri"),
    ("triton.modelRepository.uri=/models", "triton.modelRepository.uri"),
    ("s3.credentialsSecret.name=null", "name is required"),
    ("kafka.securityProtocol=SASL_SSL", "kafka.sasl"),
    ("kafka.securityProtocol=TLS", "kafka.securityProtocol"),
    ("ingest.settings.batchSize=0", "ingest.settings.batchSize"),
    ("ingest.settings.batchSize=257", "ingest.settings.batchSize"),
    ("ingest.securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
    ("triton.podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
    ("triton.image.digest=latest", "triton.image.digest"),
    ("ingest.replica=2", "replica"),
    ("ingest.tritonGrpcUrl=grpc://triton:8001", "ingest.tritonGrpcUrl"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_schema_rejects_bad_values(helm: str, setting: str, message: str) -> None:
    result = _run_helm(
        helm, "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--set", setting
    )
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("concurrency", "ingest_concurrency"),
        ("batchSize", "ingest_batch_size"),
        ("maxInflight", "ingest_max_inflight"),
        ("maxAttempts", "ingest_max_attempts"),
    ],
)
def test_schema_bounds_match_ingest_settings(value: str, field: str) -> None:
    """A value the schema lets through must not crash the service's settings at start."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    bounds = schema["properties"]["ingest"]["properties"]["settings"]["properties"][value]
    limits = {type(m).__name__: m for m in IngestSettings.model_fields[field].metadata}
    assert bounds["minimum"] == limits["Ge"].ge
    assert bounds["maximum"] == limits["Le"].le


def test_schema_accepts_a_minio_model_repository(render: Render) -> None:
    uri = "s3://http://minio.storage:9000/models/model_repository"
    triton = _one(render(sets=(f"triton.modelRepository.uri={uri}",)), "Deployment", "-triton")
    assert (
        f"--model-repository={uri}" in triton["spec"]["template"]["spec"]["containers"][0]["args"]
    )


# --- Triton -------------------------------------------------------------------------------


def test_triton_deployment_on_gpu_nodes(render: Render) -> None:
    prod = yaml.safe_load(PROD_VALUES.read_text())
    deployment = _one(render(PROD_VALUES), "Deployment", "-triton")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == prod["triton"]["replicas"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["triton"]["image"]
    assert container["image"] == f"{defaults['repository']}:{prod['triton']['image']['tag']}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == prod["triton"]["nodeSelector"]
    assert pod["tolerations"] == prod["triton"]["tolerations"]
    assert pod["affinity"] == prod["triton"]["affinity"]
    assert f"--model-repository={prod['triton']['modelRepository']['uri']}" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = _env(container)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == prod["s3"]["credentialsSecret"]["name"]
        assert "value" not in env[name]


def test_triton_rolls_without_surging_a_gpu(render: Render) -> None:
    """E7: no extra GPU pod during a rollout; runtime and priority classes are values; the
    NGC entrypoint runs (args, no command)."""
    deployment = _one(render(), "Deployment", "-triton")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert "runtimeClassName" not in pod and "priorityClassName" not in pod
    (container,) = pod["containers"]
    assert "command" not in container, "command: would replace NGC's nvidia_entrypoint.sh"
    assert container["args"][0] == "tritonserver"
    dockerfile = (ROOT / "deploy" / "docker" / "triton.Dockerfile").read_text()
    assert 'ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]' in dockerfile
    sets = ("triton.runtimeClassName=nvidia", "triton.priorityClassName=gpu-serving")
    pod = _one(render(sets=sets), "Deployment", "-triton")["spec"]["template"]["spec"]
    assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "gpu-serving")
    recreate = ("triton.strategy.type=Recreate", "triton.strategy.rollingUpdate=null")
    deployment = _one(render(sets=recreate), "Deployment", "-triton")
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_ingest_balances_over_triton_replicas_through_a_headless_service(
    render: Render,
) -> None:
    docs = render(PROD_VALUES)
    headless = _one(docs, "Service", "-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    triton_labels = _one(docs, "Deployment", "-triton")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= triton_labels.items()
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    env = _env(_ingest_container(docs))
    assert env["HISTOPROMPT_TRITON_URL"]["value"] == (
        f"dns:///{headless['metadata']['name']}:{headless['spec']['ports'][0]['port']}"
    )
    assert env["GRPC_DNS_RESOLVER"]["value"] == "native"
    off = render(sets=("triton.service.headless=false",))
    assert not [s for s in _by_kind(off, "Service") if s["spec"].get("clusterIP") == "None"]
    env = _env(_ingest_container(off))
    assert env["HISTOPROMPT_TRITON_URL"]["value"] == f"{RELEASE}-histoprompt-triton:8001"
    assert "GRPC_DNS_RESOLVER" not in env


def test_triton_can_scale_on_queue_time(render: Render, tmp_path: Path) -> None:
    """Optional KEDA scaling of Triton on one model's queue time per request (Prometheus)."""
    docs = render(sets=("triton.autoscaling.enabled=true", "autoscaling.keda.enabled=true"))
    scaled = _one(docs, "ScaledObject", "-triton")
    _validate(scaled)
    deployment = _one(docs, "Deployment", "-triton")
    assert "replicas" not in deployment["spec"], "KEDA owns Triton's replica count"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
    query = trigger["metadata"]["query"]
    assert 'model="tile_encoder"' in query and 'namespace="default"' in query
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make install-prometheus"
    rules = tmp_path / "query.yml"
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": [{"record": "q", "expr": query}]}]})
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _one(render(), "Deployment", "-triton")["spec"]["replicas"] == 1


def test_triton_shared_memory_is_optional(render: Render) -> None:
    pod = _one(render(sets=("triton.shm.enabled=false",)), "Deployment", "-triton")["spec"][
        "template"
    ]["spec"]
    assert all(v["name"] != "shm" for v in pod["volumes"])


MIXED_POOL = (
    "modelBuild.enabled=true",
    "modelBuild.parity.image.repository=registry.example.org/tensorrt-parity",
    "modelBuild.gpuTypes[0].name=l4",
    "modelBuild.gpuTypes[0].computeCapability=8.9",
    "modelBuild.gpuTypes[0].nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-L4",
    "modelBuild.gpuTypes[1].name=a100",
    "modelBuild.gpuTypes[1].computeCapability=8.0",
    "modelBuild.gpuTypes[1].nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-A100-SXM4-80GB",
)
# NGC release -> the TensorRT it ships (NVIDIA's frameworks support matrix). Plans load only
# in the TensorRT version that built them.
NGC_TENSORRT = {"24.03": "8.6.3", "24.04": "8.6.3", "24.05": "10.0.1", "24.06": "10.1.0"}


def _containers(pod: Manifest) -> dict[str, Manifest]:
    return {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}


def _readme_values() -> dict[str, str]:
    """The values files the README's Kubernetes section shows (yaml blocks whose first line
    is `# <name>.yaml`)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n# ([\w.-]+\.yaml)\n(.*?)```", text, re.S)
    return dict(blocks)


@pytest.mark.parametrize(
    "name", ["gpu-values.yaml", "external-triton.yaml", "mixed-gpu-values.yaml"]
)
def test_readme_values_render_and_validate(render: Render, tmp_path: Path, name: str) -> None:
    values = tmp_path / name
    values.write_text(_readme_values()[name])
    docs = render(values)
    for doc in docs:
        _validate(doc)
    if name == "external-triton.yaml":
        assert not [
            d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-triton")
        ]
        triton_rule = _egress_rules(docs, "ingest")[3]
        assert triton_rule["to"][0]["namespaceSelector"]
        assert _ports(triton_rule) == [8000, 8001]
    if name == "mixed-gpu-values.yaml":
        plans = [j["metadata"]["annotations"]["histoprompt.io/plan"] for j in _by_kind(docs, "Job")]
        assert [p.split(".")[1] for p in plans] == ["sm89", "sm80"]


def test_model_build_job_runs_on_the_triton_gpu_pool(render: Render) -> None:
    docs = render(PROD_VALUES)
    job = _one(docs, "Job", "")
    triton_pod = _one(docs, "Deployment", "-triton")["spec"]["template"]["spec"]
    pod = job["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert pod[key] == triton_pod[key]
    steps = _containers(pod)
    assert list(steps) == ["fetch", "build-plan", "parity", "config", "publish"]
    build = steps["build-plan"]["args"][0]
    assert steps["build-plan"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--maxShapes=PIXELS:256x3x224x224" in build
    assert "--saveEngine=/work/model.plan" in build
    # The plan must be built by the TensorRT of Triton's own NGC release.
    triton_tag = triton_pod["containers"][0]["image"].rsplit(":", 1)[1]
    assert steps["build-plan"]["image"].rsplit(":", 1)[1] == triton_tag


def test_tensorrt_version_is_the_triton_release_s() -> None:
    """E5: the TensorRT version named in every plan is the one Triton's NGC release ships."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    release = values["triton"]["image"]["tag"].split("-")[0]
    assert values["modelBuild"]["image"]["tag"].split("-")[0] == release
    assert values["modelBuild"]["tensorrtVersion"] == NGC_TENSORRT[release]


def test_export_tensorrt_pin_is_the_triton_release_s() -> None:
    from packaging.requirements import Requirement

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    trt = values["modelBuild"]["tensorrtVersion"]
    extra = tomllib.loads((ROOT / "export" / "pyproject.toml").read_text())
    (req,) = [
        Requirement(r)
        for r in extra["project"]["optional-dependencies"]["gpu"]
        if r.startswith("tensorrt")
    ]
    locked = re.search(rf'name = "{req.name}"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text())
    assert locked, f"{req.name} not in uv.lock"
    assert locked.group(1) == trt or locked.group(1).startswith(trt + "."), (req, locked.group(1))


# The Triton server inside each nvidia-pytriton wheel (its tritonclient pin names it) and the
# NGC release of that server (NVIDIA's frameworks support matrix).
PYTRITON_TRITON = {"0.5.7": "2.45", "0.5.8": "2.46", "0.5.9": "2.46", "0.5.10": "2.48"}
NGC_TRITON = {"24.04": "2.45", "24.05": "2.46", "24.06": "2.47", "24.07": "2.48"}


def test_local_stack_triton_is_the_chart_s_release() -> None:
    """The local stack (pytriton's tritonserver and python-backend stub, also copied into the
    Triton image) runs the Triton release the chart deploys, whose TensorRT export pins."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    release = values["triton"]["image"]["tag"].split("-")[0]
    locked = re.search(
        r'name = "nvidia-pytriton"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text()
    )
    assert locked, "nvidia-pytriton not in uv.lock"
    assert PYTRITON_TRITON[locked.group(1)] == NGC_TRITON[release], (locked.group(1), release)
    dockerfile = (ROOT / "deploy" / "docker" / "triton.Dockerfile").read_text()
    assert f"ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:{release}-py3" in dockerfile
    assert f"ARG PYTRITON_VERSION={locked.group(1)}" in dockerfile


def test_plans_are_one_off_jobs_per_gpu_type_not_upgrade_hooks(render: Render) -> None:
    """E6: no hook (an upgrade never waits for a free GPU); one Job per GPU type on that
    node type; plans keyed by compute capability and TensorRT version."""
    docs = render(sets=MIXED_POOL)
    jobs = _by_kind(docs, "Job")
    assert len(jobs) == 2
    for job in jobs:
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
        assert not any(k.startswith("helm.sh/hook") for k in job["metadata"].get("annotations", {}))
    l4, a100 = jobs
    assert l4["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert a100["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"
    }
    plans = [j["metadata"]["annotations"]["histoprompt.io/plan"] for j in jobs]
    assert re.fullmatch(r"model\.sm89\.trt10\.0\.1\.[0-9a-f]{12}\.plan", plans[0]), plans
    assert re.fullmatch(r"model\.sm80\.trt10\.0\.1\.[0-9a-f]{12}\.plan", plans[1]), plans
    for job, plan in zip(jobs, plans, strict=True):
        env = _env(_containers(job["spec"]["template"]["spec"])["publish"])
        assert env["PLAN"]["value"] == plan
        assert env["CACHE"]["value"].endswith(plan.split(".")[-2])  # cached by input hash
        assert job["metadata"]["name"].endswith(plan.split(".")[-2])
    # Unchanged inputs: the same Jobs (an upgrade leaves them alone); a changed input: new ones.
    assert [j["metadata"]["name"] for j in _by_kind(render(sets=MIXED_POOL), "Job")] == [
        j["metadata"]["name"] for j in jobs
    ]
    bumped = _by_kind(render(sets=(*MIXED_POOL, "modelBuild.revision=2")), "Job")
    assert not {j["metadata"]["name"] for j in bumped} & {j["metadata"]["name"] for j in jobs}


def test_model_build_needs_gpu_types_and_a_parity_image(helm: str) -> None:
    base = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    result = _run_helm(helm, *base, "--set", "modelBuild.enabled=true")
    assert result.returncode != 0 and "modelBuild.gpuTypes" in result.stderr
    no_parity = [a for a in MIXED_POOL if "parity" not in a]
    sets = [x for a in no_parity for x in ("--set", a)]
    result = _run_helm(helm, *base, *sets)
    assert result.returncode != 0 and "modelBuild.parity.image" in result.stderr


def test_config_step_lists_every_plan_in_cc_model_filenames(render: Render, tmp_path: Path) -> None:
    """The rendered config step, run on the checked-in tile_encoder config.pbtxt (twice, as
    two Jobs would), leaves a valid ModelConfig whose cc_model_filenames name each plan."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    jobs = _by_kind(render(sets=MIXED_POOL), "Job")
    plans = {"8.9": "", "8.0": ""}
    for job, cc in zip(jobs, plans, strict=True):
        plans[cc] = job["metadata"]["annotations"]["histoprompt.io/plan"]
    work = tmp_path / "work"
    work.mkdir()
    config = work / "config.pbtxt"
    config.write_text((ROOT / "model_repository" / "tile_encoder" / "config.pbtxt").read_text())
    for job in jobs:
        step = _containers(job["spec"]["template"]["spec"])["config"]
        assert step["command"] == ["python3", "-c"]
        script = step["args"][0].replace("/work/config.pbtxt", str(config))
        env = {**os.environ, "PLANS": _env(step)["PLANS"]["value"]}
        subprocess.run(["python3", "-c", script], env=env, check=True, timeout=30)
    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert dict(parsed.cc_model_filenames) == plans
    assert parsed.name == "tile_encoder" and parsed.max_batch_size == 256


def test_triton_rolls_when_the_plan_set_changes_and_waits_for_its_plans(
    render: Render,
) -> None:
    """E6: a new plan set restarts every Triton replica (checksum annotation); a replica
    starts only once all plans of its set are published."""

    def triton(sets: tuple[str, ...]) -> Manifest:
        pod: Manifest = _one(render(sets=sets), "Deployment", "-triton")["spec"]["template"]
        return pod

    base = triton(MIXED_POOL)
    checksum = base["metadata"]["annotations"]["checksum/tensorrt-plans"]
    assert triton(MIXED_POOL)["metadata"]["annotations"]["checksum/tensorrt-plans"] == checksum
    for change in (
        "modelBuild.revision=2",
        "modelBuild.tensorrtVersion=8.6.1",
        "modelBuild.gpuTypes[1].computeCapability=9.0",
    ):
        changed = triton((*MIXED_POOL, change))["metadata"]["annotations"]
        assert changed["checksum/tensorrt-plans"] != checksum, change
    (wait,) = base["spec"]["initContainers"]
    assert wait["name"] == "wait-for-plans"
    jobs = _by_kind(render(sets=MIXED_POOL), "Job")
    assert _env(wait)["PLANS"]["value"].split() == [
        j["metadata"]["annotations"]["histoprompt.io/plan"] for j in jobs
    ]
    assert "initContainers" not in triton(())["spec"]


def _helm_test_pod(docs: list[Manifest]) -> Manifest:
    (pod,) = [
        d for d in _by_kind(docs, "Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    return pod


def test_helm_test_pod_checks_triton_like_ingest(render: Render) -> None:
    docs = render(PROD_VALUES)
    pod = _helm_test_pod(docs)
    _validate(pod)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == _ingest_container(docs)["image"]
    ingest_env = _env(_ingest_container(docs))
    for name in ("HISTOPROMPT_TRITON_URL", "GRPC_DNS_RESOLVER"):
        assert _env(container)[name] == ingest_env[name]
    assert container["args"][0] == (CHART / "files" / "helm-test-triton.py").read_text()
    # Triton's NetworkPolicy lets it in.
    inference = _one(docs, "NetworkPolicy", "-triton")["spec"]["ingress"][0]
    labels = pod["metadata"]["labels"]
    assert any(p["podSelector"]["matchLabels"].items() <= labels.items() for p in inference["from"])
    assert not _by_kind(render(sets=("tests.enabled=false",)), "Pod")


class _StubTriton:
    """TritonClient as the helm test uses it, answering from class attributes."""

    ready_answer = True
    dim_offset = 0

    def __init__(self, url: str, **_: Any) -> None:
        self.url = url

    async def ready(self) -> bool:
        return self.ready_answer

    async def served_model(self) -> Any:
        from histoprompt.core.modelspec import EncoderSpec
        from histoprompt.wsi.triton import ServedModel

        spec = EncoderSpec(
            name="tiny",
            tile_px=16,
            input_px=16,
            target_mpp=0.5,
            mean=(0.5, 0.5, 0.5),
            std=(0.2, 0.2, 0.2),
            embed_dim=8,
        )
        return ServedModel(
            spec=spec,
            version="v1",
            encoder="tiny",
            synthetic=True,
            pathway_method="ssgsea",
            max_batch_size=256,
        )

    async def patch_embed(self, tiles: Any) -> Any:
        import numpy as np

        assert tiles.dtype == np.uint8 and tiles.shape[1:] == (16, 16, 3)
        return np.zeros((len(tiles), 8 + self.dim_offset), dtype=np.float32)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("ready", "dim_offset", "code"), [(True, 0, 0), (False, 0, 1), (True, 1, 1)]
)
def test_helm_test_script_passes_only_on_a_working_triton(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ready: bool,
    dim_offset: int,
    code: int,
) -> None:
    import histoprompt.wsi.triton as triton

    stub = type("Stub", (_StubTriton,), {"ready_answer": ready, "dim_offset": dim_offset})
    monkeypatch.setattr(triton, "TritonClient", stub)
    monkeypatch.setenv("HISTOPROMPT_TRITON_URL", "dns:///t-headless:8001")
    script = (CHART / "files" / "helm-test-triton.py").read_text()
    with pytest.raises(SystemExit) as exited:
        exec(compile(script, "helm-test-triton.py", "exec"), {"__name__": "__main__"})
    assert exited.value.code == code
    out = capsys.readouterr().out
    assert out.startswith("OK: dns:///t-headless:8001" if code == 0 else "FAIL"), out


# --- ingest -------------------------------------------------------------------------------


def _ingest_container(docs: list[Manifest]) -> Manifest:
    (container,) = _one(docs, "Deployment", "-ingest")["spec"]["template"]["spec"]["containers"]
    return container


def _settings_from_env(env: dict[str, Manifest]) -> IngestSettings:
    """IngestSettings built from the rendered env, as the service would (no env file)."""
    plain = {n: e["value"] for n, e in env.items() if "value" in e}
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("HISTOPROMPT_")]:
            patch.delenv(name)
        for name, value in plain.items():
            patch.setenv(name, value)
        return IngestSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_ingest_env_names_are_settings_fields(render: Render, values: str) -> None:
    env = _env(_ingest_container(render(*VALUE_SETS[values])))
    fields = set(IngestSettings.model_fields)
    assert set(ConnectionSettings.model_fields) <= fields
    names = [n for n in env if n.startswith("HISTOPROMPT_")]
    unknown = [n for n in names if n.removeprefix("HISTOPROMPT_").lower() not in fields]
    assert unknown == [], "env names that IngestSettings does not read"
    assert len(names) >= 20


def test_ingest_settings_read_from_the_rendered_env(render: Render) -> None:
    prod = yaml.safe_load(PROD_VALUES.read_text())
    env = _env(_ingest_container(render(PROD_VALUES)))
    settings = _settings_from_env(env)
    wanted = prod["ingest"]["settings"]
    assert settings.ingest_concurrency == wanted["concurrency"]
    assert settings.ingest_batch_size == wanted["batchSize"]
    assert settings.ingest_max_inflight == wanted["maxInflight"]
    assert settings.ingest_max_attempts == wanted["maxAttempts"]
    assert settings.ingest_allowed_buckets == tuple(wanted["allowedBuckets"])
    assert settings.ingest_allowed_prefixes == tuple(wanted["allowedPrefixes"])
    assert settings.ingest_shutdown_deadline_s == wanted["shutdownDeadlineSeconds"]
    assert settings.ingest_group_id == "histoprompt-ingest"  # the chart default
    assert settings.ingest_metrics_port == 9108
    assert settings.ingest_metrics_host == "0.0.0.0"
    assert settings.kafka_bootstrap == prod["kafka"]["bootstrap"]
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_ssl_cafile == "/etc/histoprompt/kafka-ca/ca.crt"
    assert settings.s3_endpoint == prod["s3"]["endpoint"]
    assert settings.s3_secure is True
    assert settings.s3_region == "eu-west-1"
    # The headless Service, balanced client-side (round_robin over every ready replica).
    assert settings.triton_url == f"dns:///{RELEASE}-histoprompt-triton-headless:8001"
    assert settings.triton_http_url == f"{RELEASE}-histoprompt-triton:8000"


def test_ingest_defaults_allow_only_the_slides_bucket(render: Render) -> None:
    settings = _settings_from_env(_env(_ingest_container(render())))
    assert settings.allowed_buckets() == ("histoprompt-slides",)
    assert settings.ingest_allowed_prefixes == ()


def test_static_membership_takes_the_pod_name(render: Render) -> None:
    """Off by default (the code's default); on, each pod is a static member named after
    itself, so a restarted container takes its partitions back at once."""
    assert "HISTOPROMPT_INGEST_GROUP_INSTANCE_ID" not in _env(_ingest_container(render()))
    sets = ("ingest.settings.staticMembership=true", "ingest.settings.sessionTimeoutSeconds=20")
    env = _env(_ingest_container(render(sets=sets)))
    assert env["HISTOPROMPT_INGEST_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    assert _settings_from_env(env).ingest_session_timeout_s == 20


def test_keda_watches_the_topic_ingest_consumes() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["kafka"]["topics"]["incoming"] == names.TOPIC_INCOMING


def test_probes_hit_the_ingest_health_endpoints(render: Render) -> None:
    container = _ingest_container(render())
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_liveness_does_not_kill_a_busy_pod(render: Render) -> None:
    """E1: /healthz fails only after the service's own livenessTimeoutSeconds without an
    event-loop beat or a poll (neither waits for a slide); the probe must not add its own,
    shorter clock: a /healthz answer slowed by busy CPUs is not a failure."""
    container = _ingest_container(render())
    probe = container["livenessProbe"]
    assert probe["timeoutSeconds"] >= 5, "the kubelet's 1 s default fails on a busy pod"
    assert container["readinessProbe"]["timeoutSeconds"] >= 5
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60
    settings = _settings_from_env(_env(container))
    assert settings.ingest_liveness_timeout_s >= 60


@pytest.mark.parametrize("deadline", [60, 90, 300])
def test_termination_grace_covers_the_sigterm_deadline(render: Render, deadline: int) -> None:
    docs = render(sets=(f"ingest.settings.shutdownDeadlineSeconds={deadline}",))
    pod = _one(docs, "Deployment", "-ingest")["spec"]["template"]["spec"]
    env = _env(pod["containers"][0])
    assert env["HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S"]["value"] == str(deadline)
    assert pod["terminationGracePeriodSeconds"] == deadline + 15


def test_kafka_and_s3_credentials_come_from_secrets(render: Render) -> None:
    prod = yaml.safe_load(PROD_VALUES.read_text())
    container = _ingest_container(render(PROD_VALUES))
    env = _env(container)
    expected = {
        "HISTOPROMPT_KAFKA_SASL_USERNAME": prod["kafka"]["sasl"]["secret"]["name"],
        "HISTOPROMPT_KAFKA_SASL_PASSWORD": prod["kafka"]["sasl"]["secret"]["name"],
        "HISTOPROMPT_S3_ACCESS_KEY": prod["s3"]["credentialsSecret"]["name"],
        "HISTOPROMPT_S3_SECRET_KEY": prod["s3"]["credentialsSecret"]["name"],
    }
    for name, secret in expected.items():
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret
    pod = _one(render(PROD_VALUES), "Deployment", "-ingest")["spec"]["template"]["spec"]
    ca = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
    assert ca["secret"]["secretName"] == prod["kafka"]["tls"]["caSecret"]["name"]


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_no_secret_material_in_values_or_manifests(render: Render, values: str) -> None:
    docs = render(*VALUE_SETS[values])
    assert not _by_kind(docs, "Secret")
    sensitive = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", re.I)
    seen = []
    for label, pod in _pod_specs(docs):
        for container in pod["containers"] + pod.get("initContainers", []):
            for name, entry in _env(container).items():
                if sensitive.search(name):
                    seen.append(name)
                    assert "secretKeyRef" in entry.get("valueFrom", {}), f"{label} {name}"
    # Otherwise the loop above checks nothing (e.g. if the env names were renamed).
    assert seen, "no sensitive env var rendered: the secretKeyRef check ran on nothing"
    default_values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Secret names and the key names inside them (e.g. secretKeyKey) are references, not
    # secrets; any other sensitive-looking key must be empty by default.
    leaked = [
        p
        for p, v in _leaves(default_values)
        if sensitive.search(p) and v and not p.endswith(("Key", ".key", ".name"))
    ]
    assert leaked == []


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _leaves(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), node)]


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_every_container_is_locked_down(render: Render, values: str) -> None:
    pods = _pod_specs(render(*VALUE_SETS[values]))
    assert pods
    for label, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["runAsUser"] != 0, label
        assert pod["automountServiceAccountToken"] is False, label
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            where = f"{label}/{container['name']}"
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in ctx["capabilities"], where


def test_image_pull_secrets_reach_every_pod(render: Render) -> None:
    docs = render(PROD_VALUES, sets=("imagePullSecrets[0].name=ngc-pull",))
    pods = _pod_specs(docs)
    assert len(pods) == 3
    for label, pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "ngc-pull"}], label
    assert all("imagePullSecrets" not in pod for _, pod in _pod_specs(render(PROD_VALUES)))


def test_pod_disruption_budgets_select_their_pods(render: Render) -> None:
    docs = render()
    for component in ("triton", "ingest"):
        pdb = _one(docs, "PodDisruptionBudget", f"-{component}")
        labels = _one(docs, "Deployment", f"-{component}")["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1
        # E10: while Triton is down every ingest pod is unready; unready pods must stay
        # evictable or the budget blocks node drains.
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        kubernetes_validate.validate(pdb, KUBE_VERSION, strict=True)


# --- network policy -----------------------------------------------------------------------


def _ports(rule: Manifest) -> list[int | str]:
    return sorted(p["port"] for p in rule["ports"])


def _egress_rules(docs: list[Manifest], component: str) -> list[Manifest]:
    policy = _one(docs, "NetworkPolicy", f"-{component}")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    rules: list[Manifest] = policy["spec"]["egress"]
    return rules


def test_ingest_network_policy_allows_only_dns_kafka_s3_triton(render: Render) -> None:
    docs = render(PROD_VALUES)
    policy = _one(docs, "NetworkPolicy", "-ingest")
    prod = yaml.safe_load(PROD_VALUES.read_text())["networkPolicy"]
    ingest_labels = _one(docs, "Deployment", "-ingest")["spec"]["template"]["metadata"]["labels"]
    triton_labels = _one(docs, "Deployment", "-triton")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= ingest_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert all(rule.get("ports") for rule in egress), "an egress rule without ports allows all"
    assert all(rule.get("to") for rule in egress), "production egress rules name their peers"
    # Ports from kafka.bootstrap (:9093) and s3.endpoint (:9000), not a fixed list.
    assert [_ports(rule) for rule in egress] == [[53, 53], [9093], [9000], [8000, 8001]]
    assert egress[1]["to"] == prod["kafka"]["peers"]
    assert egress[2]["to"] == prod["s3"]["peers"]
    triton_selector = egress[3]["to"][0]["podSelector"]["matchLabels"]
    assert triton_selector.items() <= triton_labels.items()
    assert not triton_selector.items() <= ingest_labels.items()
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_triton_network_policy_takes_inference_only_from_ingest(render: Render) -> None:
    docs = render(PROD_VALUES)
    policy = _one(docs, "NetworkPolicy", "-triton")
    ingest_labels = _one(docs, "Deployment", "-ingest")["spec"]["template"]["metadata"]["labels"]
    triton_labels = _one(docs, "Deployment", "-triton")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= triton_labels.items()
    inference, metrics = policy["spec"]["ingress"]
    # This release's ingest and its helm test pod, nothing else by default.
    components = [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in inference["from"]
    ]
    assert components == ["ingest", "test"]
    assert inference["from"][0]["podSelector"]["matchLabels"].items() <= ingest_labels.items()
    assert {p["port"] for p in inference["ports"]} == {"grpc", "http"}
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = [_ports(rule) for rule in policy["spec"]["egress"]]
    assert egress_ports == [[53, 53], [9000]]  # DNS and S3 (model repository) only


# E2: an external Triton (shared, KServe) must be reachable from ingest.
def test_ingest_reaches_an_external_triton_on_its_ports(render: Render) -> None:
    sets = (
        "triton.enabled=false",
        "ingest.tritonGrpcUrl=triton.shared.svc:8101",
        "ingest.tritonHttpUrl=triton.shared.svc:8100",
    )
    triton_rule = _egress_rules(render(sets=sets), "ingest")[3]
    assert "to" not in triton_rule, "no peers set: any destination on Triton's ports"
    assert _ports(triton_rule) == [8100, 8101]
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shared"}}}
    with_peer = (
        *sets,
        "networkPolicy.triton.peers[0].namespaceSelector.matchLabels"
        ".kubernetes\\.io/metadata\\.name=shared",
    )
    triton_rule = _egress_rules(render(sets=with_peer), "ingest")[3]
    assert triton_rule["to"] == [peer]
    assert _ports(triton_rule) == [8100, 8101]
    # ingest pointed elsewhere while the release's Triton still runs: not the release's pods.
    elsewhere = ("ingest.tritonGrpcUrl=kserve-triton.models.svc:9000",)
    triton_rule = _egress_rules(render(sets=elsewhere), "ingest")[3]
    assert "to" not in triton_rule and _ports(triton_rule) == [8000, 9000]
    fixed = (*elsewhere, "networkPolicy.triton.ports={9000}")
    assert _ports(_egress_rules(render(sets=fixed), "ingest")[3]) == [9000]


# E3: histoprompt query / predict / status pods must be allowed to reach Triton.
def test_triton_clients_can_be_allowed(render: Render) -> None:
    sets = ("networkPolicy.triton.clients[0].podSelector.matchLabels.app=histoprompt-cli",)
    policy = _one(render(sets=sets), "NetworkPolicy", "-triton")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    inference = policy["spec"]["ingress"][0]
    assert inference["from"][-1] == {"podSelector": {"matchLabels": {"app": "histoprompt-cli"}}}
    assert len(inference["from"]) == 3


# E4: NodeLocal DNSCache (169.254.20.10) or any DNS server.
@pytest.mark.parametrize("component", ["ingest", "triton"])
def test_dns_egress_for_node_local_dns_and_any_peer(render: Render, component: str) -> None:
    (dns, *_) = _egress_rules(render(), component)
    assert len(dns["to"]) == 1 and "podSelector" in dns["to"][0]
    local = ("networkPolicy.dns.extraPeers[0].ipBlock.cidr=169.254.20.10/32",)
    (dns, *_) = _egress_rules(render(sets=local), component)
    assert dns["to"][1] == {"ipBlock": {"cidr": "169.254.20.10/32"}}
    assert _ports(dns) == [53, 53]
    (dns, *_) = _egress_rules(render(sets=("networkPolicy.dns.anyPeer=true",)), component)
    assert "to" not in dns, "anyPeer: port 53 to any destination"
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


# E4b: ports follow kafka.bootstrap and s3.endpoint (Ceph RGW on 7480/8080, Kafka on 9094).
@pytest.mark.parametrize(
    ("sets", "kafka", "s3"),
    [
        ((), [9092], [443]),
        (
            ("kafka.bootstrap=b0.kafka:9094\\,b1.kafka:9095", "s3.endpoint=rgw.ceph:7480"),
            [9094, 9095],
            [7480],
        ),
        (("s3.endpoint=rgw.ceph", "s3.secure=false"), [9092], [80]),
        (("s3.endpoint=rgw.ceph", "networkPolicy.s3.extraPorts={8443}"), [9092], [443, 8443]),
        (("networkPolicy.kafka.extraPorts={9096}",), [9092, 9096], [443]),
    ],
)
def test_egress_ports_come_from_the_endpoints(
    render: Render, sets: tuple[str, ...], kafka: list[int], s3: list[int]
) -> None:
    docs = render(sets=sets)
    _dns, kafka_rule, s3_rule, _triton = _egress_rules(docs, "ingest")
    assert _ports(kafka_rule) == kafka
    assert _ports(s3_rule) == s3
    _dns, triton_s3 = _egress_rules(docs, "triton")
    assert _ports(triton_s3) == s3


def test_triton_reaches_the_model_repository_port(render: Render) -> None:
    uri = "triton.modelRepository.uri=s3://http://rgw.ceph:8080/models/model_repository"
    _dns, s3_rule = _egress_rules(render(sets=("s3.endpoint=rgw.ceph:7480", uri)), "triton")
    assert _ports(s3_rule) == [7480, 8080]


def test_network_policies_can_be_turned_off(render: Render) -> None:
    assert not _by_kind(render(sets=("networkPolicy.enabled=false",)), "NetworkPolicy")


# --- autoscaling --------------------------------------------------------------------------


def test_keda_scales_ingest_on_consumer_lag(render: Render) -> None:
    docs = render(PROD_VALUES)
    deployment = _one(docs, "Deployment", "-ingest")
    scaled = _one(docs, "ScaledObject")
    auth = _one(docs, "TriggerAuthentication")
    env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
    prod = yaml.safe_load(PROD_VALUES.read_text())
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == 2 and spec["maxReplicaCount"] == 20
    assert set(spec["fallback"]) == {"failureThreshold", "replicas"}
    assert all(isinstance(v, int) and v >= 0 for v in spec["fallback"].values())
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata is strings"
    assert meta["topic"] == "histoprompt.slides.incoming"
    assert meta["consumerGroup"] == env["HISTOPROMPT_INGEST_GROUP_ID"]["value"]
    assert meta["bootstrapServers"] == env["HISTOPROMPT_KAFKA_BOOTSTRAP"]["value"]
    assert meta["lagThreshold"] == "10"
    assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca"}
    assert refs["password"]["name"] == prod["kafka"]["sasl"]["secret"]["name"]
    assert refs["ca"]["name"] == prod["kafka"]["tls"]["caSecret"]["name"]


@pytest.mark.parametrize(
    ("mechanism", "keda"),
    [("PLAIN", "plaintext"), ("SCRAM-SHA-256", "scram_sha256"), ("SCRAM-SHA-512", "scram_sha512")],
)
def test_keda_sasl_mode_follows_the_kafka_mechanism(
    render: Render, mechanism: str, keda: str
) -> None:
    docs = render(PROD_VALUES, sets=(f"kafka.sasl.mechanism={mechanism}",))
    (trigger,) = _one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == keda


def test_autoscalers_scale_down_slowly_and_stop_at_the_partition_count(
    render: Render,
) -> None:
    """E9: cooldownPeriod only matters for scaling to zero, so scale-down is HPA behavior;
    maxReplicas defaults to the incoming topic's partitions (more replicas sit idle)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    partitions = values["kafka"]["topics"]["incomingPartitions"]
    behavior = values["autoscaling"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    hpa = _one(render(sets=("autoscaling.hpa.enabled=true",)), "HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"] == behavior
    assert hpa["spec"]["maxReplicas"] == partitions
    keda = ("autoscaling.keda.enabled=true",)
    spec = _one(render(sets=keda), "ScaledObject")["spec"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == behavior
    assert spec["maxReplicaCount"] == partitions
    assert "cooldownPeriod" not in spec, "cooldownPeriod does nothing unless scaling to zero"
    to_zero = (*keda, "autoscaling.keda.minReplicas=0", "kafka.topics.incomingPartitions=6")
    spec = _one(render(sets=to_zero), "ScaledObject")["spec"]
    assert spec["cooldownPeriod"] == values["autoscaling"]["keda"]["cooldownPeriod"]
    assert spec["maxReplicaCount"] == 6
    prod = yaml.safe_load(PROD_VALUES.read_text())
    assert (
        _one(render(PROD_VALUES), "ScaledObject")["spec"]["maxReplicaCount"]
        == (prod["kafka"]["topics"]["incomingPartitions"])
    )


def test_hpa_is_the_fallback_without_keda(render: Render) -> None:
    docs = render(sets=("autoscaling.hpa.enabled=true",))
    hpa = _one(docs, "HorizontalPodAutoscaler")
    kubernetes_validate.validate(hpa, KUBE_VERSION, strict=True)
    assert not _by_kind(docs, "ScaledObject")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-histoprompt-ingest"
    both = render(PROD_VALUES, sets=("autoscaling.hpa.enabled=true",))
    assert not _by_kind(both, "HorizontalPodAutoscaler"), "two autoscalers would fight"


# --- observability ------------------------------------------------------------------------


def test_service_monitors_select_a_service_with_a_metrics_port(render: Render) -> None:
    docs = render(PROD_VALUES)
    services = _by_kind(docs, "Service")
    monitors = _by_kind(docs, "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matched) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in matched[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+(ms|s|m)", endpoint["interval"])


def test_prometheus_rule_is_the_rule_file_and_passes_promtool(
    render: Render, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make install-prometheus"
    rule = _one(render(PROD_VALUES), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    extracted = tmp_path / "rendered-rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(extracted)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_lag_comes_from_the_kafka_exporter_when_enabled(render: Render, tmp_path: Path) -> None:
    """E8: with monitoring.kafkaExporterLag the chart records the group's broker-side lag for
    this namespace, and the rules prefer it over the self-reported gauge (stale on consumers
    that lost their partitions, absent when every consumer is dead)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make install-prometheus"
    sets = ("monitoring.prometheusRule.enabled=true", "monitoring.kafkaExporterLag.enabled=true")
    groups = _one(render(sets=sets), "PrometheusRule")["spec"]["groups"]
    assert groups[:-1] == yaml.safe_load(RULES.read_text())["groups"]
    assert groups[-1]["name"] == "histoprompt-lag-exporter"
    assert not _one(render(sets=sets[:1]), "PrometheusRule")["spec"]["groups"][-1]["name"].endswith(
        "exporter"
    )
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    lag = "kafka_consumergroup_lag"
    recorded = "histoprompt:ingest_consumer_lag:sum"
    series = [
        # The exporter runs in the kafka namespace; one series per partition.
        (
            f'{lag}{{consumergroup="histoprompt-ingest",topic="histoprompt.slides.incoming",partition="0",namespace="kafka"}}',
            "3x30",
        ),
        (
            f'{lag}{{consumergroup="histoprompt-ingest",topic="histoprompt.slides.incoming",partition="1",namespace="kafka"}}',
            "4x30",
        ),
        (
            f'{lag}{{consumergroup="other",topic="histoprompt.slides.incoming",partition="0",namespace="kafka"}}',
            "900x30",
        ),
        # A consumer that lost its partitions still reports its old lag.
        ('histoprompt_ingest_consumer_lag{namespace="default",pod="a"}', "600x30"),
    ]
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": n, "values": v} for n, v in series],
                "promql_expr_test": [
                    {
                        "expr": recorded,
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": f'{recorded}{{namespace="default"}}',
                                "value": 7,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap_carries_the_dashboard(render: Render) -> None:
    docs = render(PROD_VALUES)
    config_map = _one(docs, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    (payload,) = config_map["data"].values()
    assert json.loads(payload) == json.loads(DASHBOARD.read_text())


def test_chart_files_are_the_deploy_sources() -> None:
    """One source of truth: the chart's files/ are links to deploy/, not copies."""
    files = CHART / "files"
    assert (files / "histoprompt-rules.yml").resolve() == RULES.resolve()
    assert (files / "histoprompt-dashboard.json").resolve() == DASHBOARD.resolve()


def test_monitoring_objects_are_opt_in(render: Render) -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & (CRD_KINDS | {"ConfigMap", "Job", "HorizontalPodAutoscaler"})


def _documented_keys(readme: str) -> set[str]:
    """Backticked keys in the README, with shorthand like `a.b.c` / `.d` expanded to a.b.d."""
    keys = set(re.findall(r"`([A-Za-z][\w.*/-]*)`", readme))
    for first, rest in re.findall(r"`([A-Za-z][\w.*/-]*)`((?:\s*/\s*`\.[\w]+`)+)", readme):
        base = first.rsplit(".", 1)[0]
        keys |= {base + suffix for suffix in re.findall(r"`(\.[\w]+)`", rest)}
    return keys


def test_readme_documents_every_value() -> None:
    documented = _documented_keys((CHART / "README.md").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = []
    for path, _ in _leaves(values):
        parts = path.split(".")
        prefixes = {".".join(parts[:n]) for n in range(min(2, len(parts)), len(parts) + 1)}
        wildcard = any(k.endswith(".*") and path.startswith(k[:-1]) for k in documented)
        if not (prefixes & documented or wildcard):
            undocumented.append(path)
    assert undocumented == []


def test_packaged_chart_carries_the_linked_files(helm: str, tmp_path: Path) -> None:
    """`helm package` stores the content behind files/ links, so a chart repository copy
    renders the same rules and dashboard."""
    result = _run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("histoprompt-*.tgz")
    rendered = _run_helm(
        helm,
        "template",
        RELEASE,
        str(archive),
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(PROD_VALUES),
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert (
        _one(docs, "PrometheusRule")["spec"]["groups"]
        == yaml.safe_load(RULES.read_text())["groups"]
    )
    (payload,) = _one(docs, "ConfigMap", "-dashboard")["data"].values()
    assert json.loads(payload) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize(
    ("sets", "deployments"),
    [
        (("triton.enabled=false",), ["ingest"]),
        (("ingest.enabled=false",), ["triton"]),
    ],
)
def test_components_can_be_deployed_alone(
    render: Render, sets: tuple[str, ...], deployments: list[str]
) -> None:
    docs = render(PROD_VALUES, sets=sets)
    names = [d["metadata"]["name"].rsplit("-", 1)[1] for d in _by_kind(docs, "Deployment")]
    assert names == deployments
    for doc in docs:
        _validate(doc)
    monitors = _by_kind(docs, "ServiceMonitor")
    assert [m["metadata"]["name"].rsplit("-", 1)[1] for m in monitors] == deployments


def test_ingest_can_use_a_triton_outside_the_release(render: Render) -> None:
    sets = ("triton.enabled=false", "ingest.tritonGrpcUrl=triton.shared.svc:8001")
    env = _env(_ingest_container(render(sets=sets)))
    assert env["HISTOPROMPT_TRITON_URL"]["value"] == "triton.shared.svc:8001"
    assert env["HISTOPROMPT_TRITON_HTTP_URL"]["value"] == f"{RELEASE}-histoprompt-triton:8000"


def test_s3_ca_secret_is_mounted_and_read_as_the_s3_ca_file(render: Render) -> None:
    """A private PKI's CA for S3: mounted read-only, HISTOPROMPT_S3_CA_FILE points at it."""
    sets = ("s3.tls.caSecret.name=histoprompt-s3-ca", "s3.tls.caSecret.key=root.pem")
    docs = render(PROD_VALUES, sets=sets)
    settings = _settings_from_env(_env(_ingest_container(docs)))
    assert settings.s3_ca_file == "/etc/histoprompt/s3-ca/root.pem"
    pod = _one(docs, "Deployment", "-ingest")["spec"]["template"]["spec"]
    ca = next(v for v in pod["volumes"] if v["name"] == "s3-ca")
    assert ca["secret"] == {
        "secretName": "histoprompt-s3-ca",
        "items": [{"key": "root.pem", "path": "root.pem"}],
    }
    mount = next(m for m in _ingest_container(docs)["volumeMounts"] if m["name"] == "s3-ca")
    assert mount == {"name": "s3-ca", "mountPath": "/etc/histoprompt/s3-ca", "readOnly": True}
    # Without the Secret: system CAs, no volume.
    plain = render(PROD_VALUES)
    assert _settings_from_env(_env(_ingest_container(plain))).s3_ca_file is None


def test_triton_tls_ca_secret_turns_on_grpc_tls(render: Render) -> None:
    sets = (
        "triton.enabled=false",
        "ingest.tritonGrpcUrl=triton.example.svc:8001",
        "ingest.tritonTls.caSecret.name=triton-ca",
    )
    docs = render(PROD_VALUES, sets=sets)
    settings = _settings_from_env(_env(_ingest_container(docs)))
    assert settings.triton_ssl is True
    assert settings.triton_ssl_root_cert == "/etc/histoprompt/triton-ca/ca.crt"
    assert settings.triton_grpc_options() == {
        "ssl": True,
        "root_certificates": "/etc/histoprompt/triton-ca/ca.crt",
    }
    pod = _one(docs, "Deployment", "-ingest")["spec"]["template"]["spec"]
    assert any(v["name"] == "triton-ca" for v in pod["volumes"])
    assert _settings_from_env(_env(_ingest_container(render(PROD_VALUES)))).triton_ssl is False
