"""The Kubernetes manifests in k8s/: rendered with a real kustomize, validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), and checked
for the properties the deployment relies on (hardening, probes, headless Services, PDB + HPA per
plane, production credentials from Secrets, settings that Lading actually reads).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from services.common.settings import Settings
from tests.k8s.render import (
    K8S,
    Obj,
    container_env,
    containers,
    load_file,
    named,
    of_kind,
    pod_spec,
    render,
    selector_matches,
)

KUSTOMIZATIONS = {
    "base": K8S / "base",
    "embedded": K8S / "overlays" / "embedded",
    "production": K8S / "overlays" / "production",
    "region-replica": K8S / "overlays" / "region-replica",
}
# Plain files that are applied by hand (never by `kubectl apply -k`); validated all the same.
EXAMPLE_FILES = [
    K8S / "overlays" / "production" / "secrets.example.yaml",
    K8S / "examples" / "ingress-nginx.yaml",
]
PLANES = {"gateway": 5000, "metadata": 50051, "blob": 50052}
# The image every container runs: by digest, never by a tag that can move.
IMAGE_BY_DIGEST = re.compile(r"[a-z0-9][a-z0-9._:/-]*@sha256:[0-9a-f]{64}")
GRPC_PLANES = ("metadata", "blob")
# The oldest Kubernetes the manifests target (preStop `sleep` is on by default from 1.30) and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Volume types the Pod Security `restricted` profile admits.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def _workloads(objects: list[Obj]) -> list[Obj]:
    return of_kind(objects, "Deployment") + of_kind(objects, "Job")


def _plane_deployment(objects: list[Obj], plane: str) -> Obj:
    return named(objects, "Deployment", f"lading-{plane}")


def _only_container(workload: Obj) -> Obj:
    (container,) = pod_spec(workload)["containers"]
    return container


# --- schema ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_every_rendered_object_is_valid_against_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], kustomization: str, version: str
) -> None:
    objects = rendered[kustomization]
    assert objects, f"{kustomization} rendered nothing"
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_manifests_are_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    objects = load_file(path)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_rejects_a_misspelt_field() -> None:
    """Guards the guard: strict validation must catch a typo such as `tragetPort`."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 5000, "tragetPort": "http"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError, match="tragetPort"):
        kubernetes_validate.validate(service, K8S_VERSIONS[0], strict=True)


# --- hardening ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_every_pod_is_hardened_to_the_restricted_profile(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    workloads = _workloads(objects)
    assert workloads
    for workload in workloads:
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, where
        assert pod_security.get("runAsUser", 0) != 0, where
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        named(objects, "ServiceAccount", spec["serviceAccountName"])
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume['name']} is {kinds}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(workload):
            cwhere = f"{where}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, cwhere
            assert security.get("readOnlyRootFilesystem") is True, cwhere
            assert security.get("capabilities", {}).get("drop") == ["ALL"], cwhere
            assert not security.get("capabilities", {}).get("add"), cwhere
            assert security.get("runAsNonRoot", True) is True, cwhere
            assert security.get("privileged", False) is False, cwhere
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})), (
                    f"{cwhere}: resources.{kind} needs cpu and memory"
                )
            # A read-only root filesystem needs a writable /tmp.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{cwhere}: no /tmp mount"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{cwhere}: /tmp is not an emptyDir"
            assert IMAGE_BY_DIGEST.fullmatch(container["image"]), f"{cwhere}: {container['image']} is not pinned"
            assert container["command"] == ["lading"], cwhere


@pytest.mark.parametrize("kustomization", ["embedded", "production"])
def test_overlay_namespace_enforces_the_restricted_pod_security_profile(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], obj["metadata"]["name"]


# --- probes and shutdown --------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ["base", "production"])
def test_grpc_planes_probe_grpc_health_on_their_listen_port(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    for plane in GRPC_PLANES:
        container = _only_container(_plane_deployment(objects, plane))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == PLANES[plane]
        env = container_env(objects, container)
        assert env[f"LADING_{plane.upper()}__LISTEN"] == f"0.0.0.0:{PLANES[plane]}"
        # Kubernetes gRPC probes cannot speak TLS: with it on, they use the plaintext health-only
        # listener (`<plane>.health_listen`) on the `health` port.
        tls = env.get(f"LADING_{plane.upper()}__TLS__ENABLED") == "true"
        health_listen = env.get(f"LADING_{plane.upper()}__HEALTH_LISTEN")
        assert set(ports) == ({"grpc", "health"} if tls else {"grpc"}), plane
        probed = ports["grpc"]
        if tls:
            assert health_listen == f"0.0.0.0:{ports['health']}", plane
            probed = ports["health"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"]["port"] == probed, f"{plane} {probe}"


@pytest.mark.parametrize("kustomization", ["base", "production", "embedded"])
def test_http_front_probes_healthz_for_liveness_and_readyz_for_readiness(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    name = "lading" if kustomization == "embedded" else "lading-gateway"
    container = _only_container(named(objects, "Deployment", name))
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 5000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = container_env(objects, container)
    assert env["LADING_GATEWAY__HOST"] == "0.0.0.0"
    assert env["LADING_GATEWAY__PORT"] == "5000"


@pytest.mark.parametrize("kustomization", ["base", "production"])
def test_termination_grace_outlasts_the_planes_shutdown_grace(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    defaults = {"metadata": Settings().metadata, "blob": Settings().blob}
    for plane in GRPC_PLANES:
        deployment = _plane_deployment(objects, plane)
        container = _only_container(deployment)
        env = container_env(objects, container)
        grace = float(
            env.get(f"LADING_{plane.upper()}__SHUTDOWN_GRACE_SECONDS", defaults[plane].shutdown_grace_seconds)
        )
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        termination = pod_spec(deployment)["terminationGracePeriodSeconds"]
        # SIGTERM comes after preStop; the process then drains for `grace` and closes its pools.
        assert termination > pre_stop + grace, f"{plane}: {termination} <= {pre_stop} + {grace}"


# --- services and load balancing ------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ["base", "production"])
def test_every_plane_has_its_services_pdb_and_hpa(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    objects = rendered[kustomization]
    for plane, port in PLANES.items():
        deployment = _plane_deployment(objects, plane)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        container_ports = {p["name"]: p["containerPort"] for p in _only_container(deployment)["ports"]}
        names = [f"lading-{plane}"] + ([f"lading-{plane}-headless"] if plane in GRPC_PLANES else [])
        for name in names:
            service = named(objects, "Service", name)
            assert selector_matches(service["spec"]["selector"], pod_labels), name
            (service_port,) = service["spec"]["ports"]
            assert service_port["port"] == port, name
            target = service_port["targetPort"]
            assert container_ports.get(target, target) == port, name
        if plane in GRPC_PLANES:
            assert named(objects, "Service", f"lading-{plane}-headless")["spec"]["clusterIP"] == "None"
            assert "clusterIP" not in named(objects, "Service", f"lading-{plane}")["spec"]
        else:
            assert named(objects, "Service", "lading-gateway")["spec"]["type"] == "ClusterIP"

        pdb = named(objects, "PodDisruptionBudget", f"lading-{plane}")
        assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        assert pdb["spec"].get("maxUnavailable") == 1

        hpa = named(objects, "HorizontalPodAutoscaler", f"lading-{plane}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"lading-{plane}",
        }
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"


@pytest.mark.parametrize("kustomization", ["base", "production"])
def test_gateway_reaches_the_planes_through_their_headless_services(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    objects = rendered[kustomization]
    container = _only_container(_plane_deployment(objects, "gateway"))
    env_names = [item["name"] for item in container["env"]]
    namespace_source = container["env"][env_names.index("POD_NAMESPACE")]
    assert namespace_source["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    env = container_env(objects, container)
    assert env["LADING_GATEWAY__GRPC__LB_POLICY"] == "round_robin"
    for plane in GRPC_PLANES:
        variable = f"LADING_GATEWAY__{plane.upper()}_TARGET"
        match = re.fullmatch(
            r"dns:///([a-z0-9-]+)\.\$\(POD_NAMESPACE\)\.svc\.cluster\.local:(\d+)", env[variable]
        )
        assert match, f"{variable}={env[variable]!r} is not a dns:/// target on a Service"
        # The kubelet expands $(POD_NAMESPACE) only if it is defined earlier in the list.
        assert env_names.index("POD_NAMESPACE") < env_names.index(variable)
        service = named(objects, "Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None", f"{variable} must name a headless Service"
        assert int(match.group(2)) == service["spec"]["ports"][0]["port"] == PLANES[plane]


def test_every_env_from_reference_resolves(rendered: dict[str, list[Obj]]) -> None:
    """Generated ConfigMaps carry a hash suffix; kustomize must have rewritten every reference."""
    for kustomization, objects in rendered.items():
        for workload in _workloads(objects):
            for container in containers(workload):
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        named(objects, "ConfigMap", source["configMapRef"]["name"])
                    else:
                        assert source["secretRef"].get("optional") is True, (kustomization, source)


# --- the two profiles -----------------------------------------------------------------------------


def test_production_runs_three_replicas_of_each_plane(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    for plane in PLANES:
        assert _plane_deployment(objects, plane)["spec"]["replicas"] == 3, plane
        assert named(objects, "HorizontalPodAutoscaler", f"lading-{plane}")["spec"]["minReplicas"] == 3, plane


def test_production_takes_credentials_from_secret_key_refs(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    examples = {
        s["metadata"]["name"]: set(s["stringData"])
        for s in load_file(K8S / "overlays" / "production" / "secrets.example.yaml")
    }
    expected = {
        ("Deployment", "lading-metadata"): {"LADING_METADATA__DATABASE_URL"},
        ("Job", "lading-migrate"): {"LADING_METADATA__DATABASE_URL"},
        ("Deployment", "lading-blob"): {"LADING_BLOB__S3__ACCESS_KEY", "LADING_BLOB__S3__SECRET_KEY"},
        ("Deployment", "lading-gateway"): set(),
    }
    for (kind, name), variables in expected.items():
        env = container_env(objects, _only_container(named(objects, kind, name)))
        from_secrets = {k for k, v in env.items() if isinstance(v, dict) and "secretKeyRef" in v}
        assert from_secrets == variables, f"{kind}/{name}"
        for variable in variables:
            ref = env[variable]["secretKeyRef"]
            assert ref["key"] in examples.get(ref["name"], set()), f"{ref} is not in secrets.example.yaml"
            assert not ref.get("optional", False), f"{variable} must not be optional"
    # No credential sits in a ConfigMap, and the overlay ships no Secret to overwrite real ones.
    assert not of_kind(objects, "Secret")
    for config_map in of_kind(objects, "ConfigMap"):
        assert not {"LADING_METADATA__DATABASE_URL", "LADING_BLOB__S3__SECRET_KEY"} & set(config_map["data"])


def test_production_migrates_in_a_job_not_at_start_up(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    job = named(objects, "Job", "lading-migrate")
    container = _only_container(job)
    assert [*container["command"], *container["args"]] == ["lading", "migrate"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}
    for name in ("lading-metadata", "lading-migrate"):
        kind = "Job" if name == "lading-migrate" else "Deployment"
        env = container_env(objects, _only_container(named(objects, kind, name)))
        assert env["LADING_METADATA__AUTO_MIGRATE"] == "false", name
    blob_env = container_env(objects, _only_container(_plane_deployment(objects, "blob")))
    assert blob_env["LADING_BLOB__BACKEND"] == "s3"
    for plane in PLANES:
        container = _only_container(_plane_deployment(objects, plane))
        assert [*container["command"], *container["args"]] == ["lading", plane]


def test_embedded_is_one_pod_with_sqlite_and_blobs_on_a_volume(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["embedded"]
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not of_kind(objects, "HorizontalPodAutoscaler") and not of_kind(objects, "PodDisruptionBudget")
    container = _only_container(deployment)
    assert [*container["command"], *container["args"]] == [
        "lading",
        "serve",
        "--data-dir",
        "/data",
        "--host",
        "0.0.0.0",
    ]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert named(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The volume must be writable by the non-root user.
    assert (
        pod_spec(deployment)["securityContext"]["fsGroup"]
        == pod_spec(deployment)["securityContext"]["runAsGroup"]
    )
    env = container_env(objects, container)
    assert env["LADING_METADATA__DATABASE_URL"] == "sqlite+aiosqlite:////data/registry.db"
    assert env["LADING_METADATA__AUTO_MIGRATE"] == "true"
    assert env["LADING_BLOB__BACKEND"] == "filesystem"
    assert env["LADING_BLOB__FILESYSTEM__ROOT"].startswith("/data/")
    (service,) = of_kind(objects, "Service")
    assert selector_matches(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])


# --- the image ------------------------------------------------------------------------------------

# The name the manifests give Lading's image; only the kustomizations' `images:` say where it is.
IMAGE_NAME = "lading"


def _image_entry(kustomization: Path) -> dict[str, str]:
    entries = yaml.safe_load((kustomization / "kustomization.yaml").read_text()).get("images") or []
    found = [entry for entry in entries if entry.get("name") == IMAGE_NAME]
    assert len(found) == 1, f"{kustomization}: no images: entry named {IMAGE_NAME!r}"
    return found[0]


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_every_container_runs_the_image_set_by_kustomize_images_by_digest(
    rendered: dict[str, list[Obj]], kustomization: str
) -> None:
    entry = _image_entry(KUSTOMIZATIONS[kustomization])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry.get("digest", "")), f"{kustomization}: no digest"
    assert "newTag" not in entry, f"{kustomization}: a tag next to the digest"
    if kustomization != "base":  # the base is never applied alone; each overlay says where to pull
        assert entry.get("newName"), f"{kustomization}: images: entry without newName"
    expected = f"{entry.get('newName', IMAGE_NAME)}@{entry['digest']}"
    images = {c["image"] for w in _workloads(rendered[kustomization]) for c in containers(w)}
    assert images == {expected}


def test_manifests_name_the_image_only_by_its_kustomize_name() -> None:
    """No container hard-codes a registry or tag that the `images:` entries would not reach."""
    sources = sorted(K8S.glob("base/*.yaml")) + sorted(K8S.glob("overlays/*/*.yaml"))
    named_images = set()
    for source in sources:
        if source.name == "kustomization.yaml":
            continue
        for obj in load_file(source):
            # Patches (no pod template, or containers without an image) name none.
            if obj.get("kind") in {"Deployment", "Job"} and "template" in obj.get("spec", {}):
                named_images |= {c["image"] for c in containers(obj) if "image" in c}
    assert named_images == {IMAGE_NAME}


def test_pinning_an_overlay_pins_every_container(tmp_path: Path) -> None:
    """What k8s/README.md says to do after pushing an image (`kustomize edit set image
    lading=<where>@<digest>` in the overlay) reaches every container of that overlay."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    pinned = "127.0.0.1:5000/lading/lading@sha256:" + hashlib.sha256(b"a pushed image").hexdigest()
    new_name, digest = pinned.split("@")
    for overlay in ("embedded", "production"):
        path = copy / "overlays" / overlay / "kustomization.yaml"
        document = yaml.safe_load(path.read_text())
        (entry,) = [e for e in document["images"] if e["name"] == IMAGE_NAME]
        entry.update(newName=new_name, digest=digest)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        objects = render(path.parent)
        images = {c["image"] for w in _workloads(objects) for c in containers(w)}
        assert images == {pinned}, overlay


# --- settings Lading really reads -----------------------------------------------------------------


def _field_path_exists(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    annotation = field.annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and _field_path_exists(annotation, parts[1:])
    )


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_every_lading_variable_is_a_setting_and_parses(
    rendered: dict[str, list[Obj]], kustomization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt LADING_* name is silently ignored by pydantic-settings; catch it here."""
    objects = rendered[kustomization]
    checked = 0
    for workload in _workloads(objects):
        for container in containers(workload):
            env = container_env(objects, container)
            lading = {k: v for k, v in env.items() if k.startswith("LADING_")}
            for variable in lading:
                parts = variable.removeprefix("LADING_").lower().split("__")
                assert _field_path_exists(Settings, parts), (
                    f"{workload['metadata']['name']}: {variable} is no setting"
                )
            for name in [n for n in os.environ if n.startswith("LADING_")]:
                monkeypatch.delenv(name)
            for variable, value in lading.items():
                if isinstance(value, dict):  # from a Secret: any string will do
                    value = "postgresql+asyncpg://u:p@db:5432/x" if "DATABASE_URL" in variable else "secret"
                monkeypatch.setenv(variable, value.replace("$(POD_NAMESPACE)", "lading"))
            Settings()  # raises pydantic.ValidationError on a value of the wrong shape
            checked += 1
    assert checked > 0, f"{kustomization} configures no lading container"


# --- access control -------------------------------------------------------------------------------

# The LADING_AUTH__* variables each production workload gets: only what its process reads
# (gateway/auth/setup.py and gate.py; services/metadata/accounts/main.py). MODE is in the shared
# ConfigMap, so every workload sees it.
PRODUCTION_AUTH = {
    ("Deployment", "lading-gateway"): {
        "LADING_AUTH__MODE",
        "LADING_AUTH__SIGNING_KEY_FILE",
        "LADING_AUTH__REALM",
    },
    ("Deployment", "lading-metadata"): {
        "LADING_AUTH__MODE",
        "LADING_AUTH__BOOTSTRAP_ADMIN",
        "LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD_FILE",
    },
    ("Deployment", "lading-blob"): {"LADING_AUTH__MODE"},
    ("Job", "lading-migrate"): {"LADING_AUTH__MODE"},
}


def _secret_behind_file(workload: Obj, container: Obj, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file `path` as `container` sees it; AssertionError unless it is a
    read-only mount of a Secret volume that carries the key at that path."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        assert "subPath" not in mount, f"{path}: subPath mounts never see a Secret's updates"
        assert mount.get("readOnly") is True, f"{path}: the mount {mount['mountPath']} is not read-only"
        secret = volumes[mount["name"]].get("secret")
        assert secret is not None, f"{path}: volume {mount['name']} is not a Secret"
        relative = path.removeprefix(prefix)
        items = {item["path"]: item["key"] for item in secret.get("items", [])}
        key = items.get(relative) if items else relative
        assert key is not None, f"{path}: {secret['secretName']} projects no key to {relative}"
        assert not secret.get("optional", False), f"{path}: a missing Secret must keep the pod from starting"
        # The non-root user must be able to read it: world-readable, or group-readable with fsGroup.
        mode = next((i.get("mode") for i in secret.get("items", []) if i["path"] == relative), None)
        mode = secret.get("defaultMode", 0o644) if mode is None else mode
        fs_group = pod_spec(workload).get("securityContext", {}).get("fsGroup")
        assert mode & 0o004 or (mode & 0o040 and fs_group is not None), f"{path}: mode {mode:o} unreadable"
        return secret["secretName"], key
    raise AssertionError(f"{path} is not inside any volume mount of {container['name']}")


def _example_secret_keys() -> dict[str, set[str]]:
    return {
        s["metadata"]["name"]: set(s["stringData"])
        for s in load_file(K8S / "overlays" / "production" / "secrets.example.yaml")
    }


def test_production_turns_token_auth_on_with_keys_mounted_from_secrets(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    examples = _example_secret_keys()

    gateway = _plane_deployment(objects, "gateway")
    container = _only_container(gateway)
    env = container_env(objects, container)
    assert env["LADING_AUTH__MODE"] == "token"
    assert _secret_behind_file(gateway, container, env["LADING_AUTH__SIGNING_KEY_FILE"]) == (
        "lading-token-key",
        "token.pem",
    )
    assert env["LADING_AUTH__REALM"].startswith("https://") and env["LADING_AUTH__REALM"].endswith("/token")

    metadata = _plane_deployment(objects, "metadata")
    container = _only_container(metadata)
    env = container_env(objects, container)
    assert env["LADING_AUTH__BOOTSTRAP_ADMIN"] == "admin"
    assert _secret_behind_file(metadata, container, env["LADING_AUTH__BOOTSTRAP_ADMIN_PASSWORD_FILE"]) == (
        "lading-admin",
        "password",
    )
    for name, key in (("lading-token-key", "token.pem"), ("lading-admin", "password")):
        assert key in examples.get(name, set()), f"{name}/{key} is not in secrets.example.yaml"


def test_production_gives_each_workload_only_the_auth_settings_and_secrets_it_reads(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["production"]
    mounted_secrets = {
        ("Deployment", "lading-gateway"): {"lading-token-key", "lading-gateway-grpc-tls"},
        ("Deployment", "lading-metadata"): {"lading-admin", "lading-metadata-grpc-tls"},
        ("Deployment", "lading-blob"): {"lading-blob-grpc-tls"},
        ("Job", "lading-migrate"): set(),
    }
    for (kind, name), variables in PRODUCTION_AUTH.items():
        workload = named(objects, kind, name)
        env = container_env(objects, _only_container(workload))
        assert {k for k in env if k.startswith("LADING_AUTH__")} == variables, f"{kind}/{name}"
        secrets = {v["secret"]["secretName"] for v in pod_spec(workload).get("volumes", []) if "secret" in v}
        assert secrets == mounted_secrets[(kind, name)], f"{kind}/{name}"


def test_production_ingress_example_routes_the_token_realm_to_the_gateway(rendered: dict[str, list[Obj]]) -> None:
    realm = container_env(
        rendered["production"], _only_container(_plane_deployment(rendered["production"], "gateway"))
    )["LADING_AUTH__REALM"]
    (ingress,) = load_file(K8S / "examples" / "ingress-nginx.yaml")
    (rule,) = ingress["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    host_and_path = realm.removeprefix("https://")
    assert host_and_path == f"{rule['host']}/token", "the realm must be this Ingress's /token"
    assert routes.get("/token") == routes.get("/v2") == "lading-gateway"


def test_embedded_keeps_access_control_off(rendered: dict[str, list[Obj]], monkeypatch: pytest.MonkeyPatch) -> None:
    objects = rendered["embedded"]
    (deployment,) = of_kind(objects, "Deployment")
    env = container_env(objects, _only_container(deployment))
    auth = {k: v for k, v in env.items() if k.startswith("LADING_AUTH__")}
    assert auth in ({}, {"LADING_AUTH__MODE": "none"})
    assert not [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    for name in [n for n in os.environ if n.startswith("LADING_AUTH__")]:
        monkeypatch.delenv(name)
    for variable, value in auth.items():
        monkeypatch.setenv(variable, value)
    assert Settings().auth.mode == "none"


# --- S3 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_s3_endpoint_is_host_and_port_without_a_scheme(rendered: dict[str, list[Obj]], kustomization: str) -> None:
    """LADING_BLOB__S3__ENDPOINT is host[:port]; TLS is LADING_BLOB__S3__SECURE (a scheme in the
    endpoint makes the S3 client fail). PRESIGN_ENDPOINT is a full URL by design and not checked."""
    objects = rendered[kustomization]
    for workload in _workloads(objects):
        for container in containers(workload):
            endpoint = container_env(objects, container).get("LADING_BLOB__S3__ENDPOINT")
            if isinstance(endpoint, str):
                assert "://" not in endpoint, f"{workload['metadata']['name']}: {endpoint!r} has a scheme"
                assert "/" not in endpoint, f"{workload['metadata']['name']}: {endpoint!r} has a path"
    if kustomization == "production":
        blob_env = container_env(objects, _only_container(_plane_deployment(objects, "blob")))
        assert blob_env["LADING_BLOB__S3__ENDPOINT"] and blob_env["LADING_BLOB__S3__SECURE"] == "true"
