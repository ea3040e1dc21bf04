"""The cluster manifests against the schemas of the tools that read them, offline.

- cluster/kuberay-*.yaml: KubeRay's own CRD schemas (a trimmed copy in tests/data/kuberay_crds/, see its README),
  checked with jsonschema Draft 7 the way the API server checks them with strict field validation (kubectl's default):
  an unknown field is an error, an ``x-kubernetes-int-or-string`` field takes either.
- cluster/ray-up-*.yaml: Ray's cluster-launcher schema (``prepare_config`` then ``validate_config``, what ``ray up``
  does first). This imports ``ray.autoscaler`` (the ray package, no torch / pyarrow, no Ray started).
"""

import copy
import glob
import json
import os
import re

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "cluster")
CRDS = os.path.join(REPO, "tests", "data", "kuberay_crds")
KUBERAY = sorted(glob.glob(os.path.join(CLUSTER, "kuberay-*.yaml")))
RAY_UP = sorted(glob.glob(os.path.join(CLUSTER, "ray-up-*.yaml")))
PLURAL = {"RayJob": "rayjobs", "RayCluster": "rayclusters"}


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _draft7(node):
    """A Kubernetes structural schema as Draft 7: ``type`` dropped where ``x-kubernetes-int-or-string`` allows both,
    and ``additionalProperties: false`` on every object that lists its properties and does not preserve unknown
    fields (the API server's strict field validation)."""
    out = dict(node)
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if "properties" in out:
        out["properties"] = {k: _draft7(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _draft7(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _draft7(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_draft7(s) for s in out[key]]
    return out


def _validator(doc):
    group, version = doc["apiVersion"].split("/")
    assert group == "ray.io", doc["apiVersion"]
    path = os.path.join(CRDS, f"ray.io_{PLURAL[doc['kind']]}.{version}.json")
    assert os.path.isfile(path), f"no trimmed CRD for {doc['kind']} {version}: run tests/data/kuberay_crds/trim.py"
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    assert record["kind"] == doc["kind"]
    schema = _draft7(record["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(doc):
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
        for e in sorted(_validator(doc).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_the_trimmed_crds_name_their_kuberay_commit():
    with open(os.path.join(CRDS, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    for path in glob.glob(os.path.join(CRDS, "*.json")):
        with open(path, encoding="utf-8") as fh:
            source = json.load(fh)["source"]
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["commit"] in readme, path
        assert source["path"].startswith("ray-operator/config/crd/bases/ray.io_")


@pytest.mark.parametrize("path", KUBERAY, ids=os.path.basename)
def test_kuberay_manifest_validates_against_the_kuberay_crd(path):
    doc = _load(path)
    errors = _errors(doc)
    assert not errors, (
        f"{os.path.basename(path)} does not match KubeRay's {doc['kind']} CRD (if a field is real "
        f"but missing from the trimmed copy, rerun tests/data/kuberay_crds/trim.py):\n" + "\n".join(errors)
    )


def _cluster(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _rename(d, old, new):
    d[new] = d.pop(old)


# (file, what is wrong, the change, a word the error must name)
BROKEN = [
    (
        "kuberay-raycluster.yaml",
        "misspelled headGroupSpec.rayStartParam",
        lambda d: _rename(_cluster(d)["headGroupSpec"], "rayStartParams", "rayStartParam"),
        "rayStartParam",
    ),
    (
        "kuberay-rayjob.yaml",
        "misspelled rayClusterSpec.headGroupSpec.rayStartParam",
        lambda d: _rename(_cluster(d)["headGroupSpec"], "rayStartParams", "rayStartParam"),
        "rayStartParam",
    ),
    (
        "kuberay-rayjob.yaml",
        "misspelled spec.shutdownAfterJobFinish",
        lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
        "shutdownAfterJobFinish",
    ),
    (
        "kuberay-raycluster.yaml",
        "minReplicas misplaced on the head group",
        lambda d: _cluster(d)["headGroupSpec"].update(minReplicas=0),
        "minReplicas",
    ),
    (
        "kuberay-raycluster.yaml",
        "rayStartParams misplaced in the pod template",
        lambda d: _cluster(d)["workerGroupSpecs"][0]["template"]["spec"].update(rayStartParams={}),
        "rayStartParams",
    ),
    (
        "kuberay-rayjob.yaml",
        "misspelled container volumeMount",
        lambda d: _rename(
            _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0], "volumeMounts", "volumeMount"
        ),
        "volumeMount",
    ),
    (
        "kuberay-raycluster.yaml",
        "maxReplicas is not an integer",
        lambda d: _cluster(d)["workerGroupSpecs"][0].update(maxReplicas="four"),
        "four",
    ),
    (
        "kuberay-raycluster.yaml",
        "a worker group without its required groupName",
        lambda d: _cluster(d)["workerGroupSpecs"][0].pop("groupName"),
        "groupName",
    ),
    (
        "kuberay-raycluster.yaml",
        "upscalingMode outside its enum",
        lambda d: _cluster(d)["autoscalerOptions"].update(upscalingMode="Fast"),
        "Fast",
    ),
]


@pytest.mark.parametrize("name,what,change,word", BROKEN, ids=[b[1] for b in BROKEN])
def test_a_broken_kuberay_manifest_fails_validation(name, what, change, word):
    doc = copy.deepcopy(_load(os.path.join(CLUSTER, name)))
    assert not _errors(doc)
    change(doc)
    errors = _errors(doc)
    assert errors and any(word in e for e in errors), (what, errors)


def test_kuberay_int_or_string_fields_take_both():
    doc = _load(os.path.join(CLUSTER, "kuberay-raycluster.yaml"))
    limits = _cluster(doc)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"], limits["nvidia.com/gpu"] = 8, 1  # quantities as integers, the manifests write strings
    assert not _errors(doc)
    _cluster(doc)["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
    assert not _errors(doc)  # a real field the manifest leaves commented out


# ----------------------------------------------------------------------------------------------- ray up (Ray's own)
def _ray_up_errors(cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except (jsonschema.ValidationError, ValueError, RuntimeError, AssertionError) as exc:  # Ray uses all four
        return str(exc).splitlines()[0]
    return None


@pytest.mark.parametrize("path", RAY_UP, ids=os.path.basename)
def test_ray_up_config_passes_rays_cluster_validation(path):
    assert _ray_up_errors(_load(path)) is None


def test_a_misspelled_ray_up_key_fails_rays_validation():
    cfg = _load(RAY_UP[0])
    worker = next(k for k in cfg["available_node_types"] if k != cfg["head_node_type"])
    _rename(cfg["available_node_types"][worker], "min_workers", "min_worker")
    assert "min_worker" in (_ray_up_errors(cfg) or "")
    cfg = _load(RAY_UP[0])
    cfg["docker"]["imag"] = cfg["docker"].pop("image")
    assert _ray_up_errors(cfg)
