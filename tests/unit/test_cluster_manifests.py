"""The cluster manifests under cluster/: what users (and we) get wrong before a cluster ever starts (what the
cluster installs: test_cluster_dependencies.py).

Parsed with yaml.safe_load only (:mod:`tests.cluster_manifests`); Ray's version comes from the package metadata (Ray
itself is not imported).
"""

import importlib.metadata
import os
import re

import pytest
import yaml

from tests.cluster_manifests import CLUSTER, REPO, docs, files, kind, load, strings

pytestmark = pytest.mark.unit

RAY_VERSION = importlib.metadata.version("ray")
IMAGE = re.compile(r"rayproject/ray(?:-ml)?:([\w.\-]+)")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:jobs|configs|cluster)/[\w./-]+\.(?:py|ya?ml))")
GPU = "nvidia.com/gpu"


def _cluster_specs():
    """(file, RayCluster spec) for every RayCluster and every RayJob's rayClusterSpec."""
    out = [(n, d["spec"]) for n, d in kind("RayCluster").items()]
    out += [(n, d["spec"]["rayClusterSpec"]) for n, d in kind("RayJob").items() if "rayClusterSpec" in d["spec"]]
    return out


def _containers(pod_template):
    return pod_template["spec"]["containers"]


def _gpus(resources, section):
    return int(str((resources or {}).get(section, {}).get(GPU, 0)))


def test_the_expected_manifests_exist_and_parse():
    names = set(docs())
    assert {"kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "runtime_env.yaml"} <= names
    assert any(n.startswith("ray-up-") for n in names), names
    for name, doc in docs().items():
        assert isinstance(doc, dict) and doc, f"{name} is empty or not a mapping"


def test_every_ray_image_matches_the_installed_ray():
    seen = 0
    for path in files():
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()  # comments too: the Dockerfile / usage hints there get copied
        for s in [text, *strings(load(path))]:
            for tag in IMAGE.findall(s):
                seen += 1
                assert tag == RAY_VERSION or tag.startswith(RAY_VERSION + "-"), (
                    f"{name}: image tag {tag!r} does not match ray {RAY_VERSION}"
                )
    assert seen >= 3  # RayCluster head + worker, RayJob, ray up docker image


def test_kuberay_ray_version_field_matches():
    for name, spec in _cluster_specs():
        if "rayVersion" in spec:
            assert str(spec["rayVersion"]) == RAY_VERSION, name


def test_kuberay_head_requests_no_gpu():
    specs = _cluster_specs()
    assert len(specs) >= 2
    for name, spec in specs:
        head = spec["headGroupSpec"]
        assert str(head.get("rayStartParams", {}).get("num-gpus", "0")) == "0", name
        for c in _containers(head["template"]):
            for section in ("requests", "limits"):
                assert _gpus(c.get("resources"), section) == 0, f"{name}: head {section} a GPU"


def test_kuberay_gpu_worker_groups_have_gpu_limits_and_sane_replicas():
    for name, spec in _cluster_specs():
        groups = spec["workerGroupSpecs"]
        gpu_groups = [
            g
            for g in groups
            if "gpu" in g["groupName"].lower()
            or any(GPU in str(c.get("resources")) for c in _containers(g["template"]))
        ]
        assert gpu_groups, f"{name}: no GPU worker group"
        for g in gpu_groups:
            for c in _containers(g["template"]):
                res = c.get("resources") or {}
                assert _gpus(res, "limits") >= 1, f"{name}/{g['groupName']}: {GPU} missing from limits"
                if GPU in res.get("requests", {}):
                    assert _gpus(res, "requests") == _gpus(res, "limits"), f"{name}: GPU requests != limits"
        for g in groups:
            lo, hi = int(g.get("minReplicas", 0)), int(g.get("maxReplicas", g.get("replicas", 0)))
            assert 0 <= lo <= hi, f"{name}/{g['groupName']}: minReplicas {lo} > maxReplicas {hi}"
            if "replicas" in g:
                assert lo <= int(g["replicas"]) <= hi, f"{name}/{g['groupName']}: replicas outside [min, max]"


def test_rayjob_entrypoint_and_shutdown():
    jobs = kind("RayJob")
    assert jobs
    for name, doc in jobs.items():
        spec = doc["spec"]
        assert spec.get("shutdownAfterJobFinishes") is True, name
        assert spec["entrypoint"].split()[:2] == ["python", "jobs/run.py"], spec["entrypoint"]
        env = yaml.safe_load(spec["runtimeEnvYAML"]) if "runtimeEnvYAML" in spec else {}
        assert isinstance(env, dict), f"{name}: runtimeEnvYAML is not a mapping"


def test_ray_up_head_has_no_gpu_and_workers_do():
    ups = {n: d for n, d in docs().items() if n.startswith("ray-up-")}
    assert ups
    for name, doc in ups.items():
        types = doc["available_node_types"]
        head = types[doc["head_node_type"]]
        assert int(head.get("resources", {}).get("GPU", 0)) == 0, f"{name}: head has GPUs"
        workers = {k: v for k, v in types.items() if k != doc["head_node_type"]}
        assert any(int(v.get("resources", {}).get("GPU", 0)) >= 1 for v in workers.values()), (
            f"{name}: no GPU worker node type"
        )
        for k, v in workers.items():
            lo, hi = int(v.get("min_workers", 0)), int(v.get("max_workers", doc.get("max_workers", 0)))
            assert 0 <= lo <= hi <= int(doc.get("max_workers", hi)), f"{name}/{k}: min/max workers"
        assert any(".[vllm]" in c and "pip install" in c for c in doc.get("setup_commands", [])), name


def test_runtime_env_sets_health_check_and_leaves_offline_to_the_user():
    path = os.path.join(CLUSTER, "runtime_env.yaml")
    env = load(path)["env_vars"]
    assert not set(OFFLINE) & set(env)
    with open(path, encoding="utf-8") as fh:
        assert '# HF_HUB_OFFLINE: "1"' in fh.read()  # offered, commented out, for air-gapped nodes
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert float(env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) > 0
    assert all(isinstance(v, str) for v in env.values())  # Ray requires string env vars


def test_every_repo_path_the_manifests_mention_exists():
    mentioned = set()
    for path in files():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()  # comments too: the usage lines there are what users copy
        mentioned.update(REPO_PATH.findall(text))
        for s in strings(load(path)):
            mentioned.update(REPO_PATH.findall(s))
    assert "jobs/run.py" in mentioned
    missing = sorted(p for p in mentioned if not os.path.exists(os.path.join(REPO, p)))
    assert not missing, f"manifests mention paths that do not exist: {missing}"


# ------------------------------------------------------------------------------- offline is the user's choice
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
OFFLINE_IN_TEXT = re.compile(r"\b(%s)\s*=\s*[\"']?(\w+)" % "|".join(OFFLINE))


def _offline_settings(node):
    """(variable, value) wherever a parsed manifest sets an HF offline variable: a mapping key (runtime env
    env_vars), a Kubernetes env entry ({name, value}), or VAR=value in a string (docker -e, a command)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in OFFLINE:
                yield k, str(v)
        if node.get("name") in OFFLINE and "value" in node:
            yield node["name"], str(node["value"])
        for v in node.values():
            yield from _offline_settings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _offline_settings(v)
    elif isinstance(node, str):
        yield from OFFLINE_IN_TEXT.findall(node)
        if "\n" in node and ":" in node:  # an embedded YAML document (RayJob.runtimeEnvYAML)
            try:
                inner = yaml.safe_load(node)
            except yaml.YAMLError:
                inner = None
            if isinstance(inner, (dict, list)):
                yield from _offline_settings(inner)


def _forced(node):
    return sorted({(k, v) for k, v in _offline_settings(node) if v.strip().lower() in ("1", "true", "yes", "on")})


def test_no_manifest_forces_hf_offline_mode():
    forced = {name: _forced(doc) for name, doc in docs().items() if _forced(doc)}
    assert not forced, f"offline mode is the user's choice (leave it commented out): {forced}"


def test_the_offline_check_finds_each_form():
    assert _forced({"env_vars": {"HF_HUB_OFFLINE": "1"}}) == [("HF_HUB_OFFLINE", "1")]
    assert _forced({"env": [{"name": "TRANSFORMERS_OFFLINE", "value": "true"}]}) == [("TRANSFORMERS_OFFLINE", "true")]
    assert _forced({"run_options": ["-e HF_DATASETS_OFFLINE=1"]}) == [("HF_DATASETS_OFFLINE", "1")]
    assert _forced({"runtimeEnvYAML": "env_vars:\n  HF_HUB_OFFLINE: '1'\n"}) == [("HF_HUB_OFFLINE", "1")]
    assert _forced({"env_vars": {"HF_HUB_OFFLINE": "0"}}) == []
