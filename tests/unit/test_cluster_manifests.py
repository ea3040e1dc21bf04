"""The cluster manifests under cluster/: what users (and we) get wrong before a cluster ever starts.

Parsed with yaml.safe_load only; Ray's version comes from the package metadata (Ray itself is not imported).
"""

import glob
import importlib.metadata
import os
import re
import shlex

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "cluster")
RAY_VERSION = importlib.metadata.version("ray")
IMAGE = re.compile(r"rayproject/ray(?:-ml)?:([\w.\-]+)")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:jobs|configs|cluster)/[\w./-]+\.(?:py|ya?ml))")
GPU = "nvidia.com/gpu"


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _files():
    return sorted(glob.glob(os.path.join(CLUSTER, "*.yaml")) + glob.glob(os.path.join(CLUSTER, "*.yml")))


def _strings(node):
    """Every string in a parsed YAML document; an embedded YAML string (RayJob.runtimeEnvYAML) is walked too."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node
        if "\n" in node and ":" in node:
            try:
                inner = yaml.safe_load(node)
            except yaml.YAMLError:
                inner = None
            if isinstance(inner, (dict, list)):
                yield from _strings(inner)


def _docs():
    return {os.path.basename(p): _load(p) for p in _files()}


def _kind(kind):
    return {name: d for name, d in _docs().items() if isinstance(d, dict) and d.get("kind") == kind}


def _cluster_specs():
    """(file, RayCluster spec) for every RayCluster and every RayJob's rayClusterSpec."""
    out = [(n, d["spec"]) for n, d in _kind("RayCluster").items()]
    out += [(n, d["spec"]["rayClusterSpec"]) for n, d in _kind("RayJob").items() if "rayClusterSpec" in d["spec"]]
    return out


def _containers(pod_template):
    return pod_template["spec"]["containers"]


def _gpus(resources, section):
    return int(str((resources or {}).get(section, {}).get(GPU, 0)))


def test_the_expected_manifests_exist_and_parse():
    names = set(_docs())
    assert {"kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "runtime_env.yaml"} <= names
    assert any(n.startswith("ray-up-") for n in names), names
    for name, doc in _docs().items():
        assert isinstance(doc, dict) and doc, f"{name} is empty or not a mapping"


def test_every_ray_image_matches_the_installed_ray():
    seen = 0
    for path in _files():
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()  # comments too: the Dockerfile / usage hints there get copied
        for s in [text, *_strings(_load(path))]:
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
    jobs = _kind("RayJob")
    assert jobs
    for name, doc in jobs.items():
        spec = doc["spec"]
        assert spec.get("shutdownAfterJobFinishes") is True, name
        assert spec["entrypoint"].split()[:2] == ["python", "jobs/run.py"], spec["entrypoint"]
        env = yaml.safe_load(spec["runtimeEnvYAML"]) if "runtimeEnvYAML" in spec else {}
        assert isinstance(env, dict), f"{name}: runtimeEnvYAML is not a mapping"


def test_ray_up_head_has_no_gpu_and_workers_do():
    ups = {n: d for n, d in _docs().items() if n.startswith("ray-up-")}
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
    env = _load(path)["env_vars"]
    assert not set(OFFLINE) & set(env)
    with open(path, encoding="utf-8") as fh:
        assert '# HF_HUB_OFFLINE: "1"' in fh.read()  # offered, commented out, for air-gapped nodes
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert float(env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) > 0
    assert all(isinstance(v, str) for v in env.values())  # Ray requires string env vars


def test_every_repo_path_the_manifests_mention_exists():
    mentioned = set()
    for path in _files():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()  # comments too: the usage lines there are what users copy
        mentioned.update(REPO_PATH.findall(text))
        for s in _strings(_load(path)):
            mentioned.update(REPO_PATH.findall(s))
    assert "jobs/run.py" in mentioned
    missing = sorted(p for p in mentioned if not os.path.exists(os.path.join(REPO, p)))
    assert not missing, f"manifests mention paths that do not exist: {missing}"


# ------------------------------------------------------------------ what the cluster installs vs pyproject.toml
PROVIDED_BY_IMAGE = {"ray"}  # every manifest runs a rayproject/ray image
PROJECT = re.compile(r"^(?:\.|\./?|/\S*rcs-ray/?|rcs[-_]ray)(?:\[[\w,\-]*\])?$")  # ., .[vllm], rcs-ray[...]
SHELL_OPS = {"&&", "||", ";", "|"}


def _dist(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_dependencies():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        deps = [Requirement(d) for d in tomllib.load(fh)["project"]["dependencies"]]
    return {_dist(r.name): str(r.specifier) for r in deps}


def _runtime_envs():
    """(where, runtime env dict): cluster/runtime_env.yaml and every RayJob's runtimeEnvYAML."""
    out = [("runtime_env.yaml", _load(os.path.join(CLUSTER, "runtime_env.yaml")))]
    for name, doc in _kind("RayJob").items():
        if "runtimeEnvYAML" in doc["spec"]:
            out.append((f"{name}: runtimeEnvYAML", yaml.safe_load(doc["spec"]["runtimeEnvYAML"])))
    return out


def _env_packages(env):
    """The requirement strings a runtime env's ``pip`` / ``uv`` installs (None: it installs nothing)."""
    for key in ("pip", "uv"):
        spec = env.get(key)
        if spec is not None:
            packages = spec.get("packages") if isinstance(spec, dict) else spec
            assert isinstance(packages, list), f"{key}: a requirements file is not checked here; list the packages"
            return packages
    return None


def _pip_installs(command):
    """The targets of each ``pip install`` in a shell command line (options and their values skipped)."""
    tokens = shlex.split(command, comments=True)
    for i in range(len(tokens) - 1):
        if tokens[i].endswith("pip") and tokens[i + 1] == "install":
            targets, rest = [], tokens[i + 2 :]
            while rest and rest[0] not in SHELL_OPS:
                tok = rest.pop(0)
                if tok in (
                    "-r",
                    "--requirement",
                    "-c",
                    "--constraint",
                    "-i",
                    "--index-url",
                    "--extra-index-url",
                    "-f",
                    "--find-links",
                    "--target",
                    "-t",
                    "--prefix",
                ):
                    rest = rest[1:]
                elif tok in ("-e", "--editable") or not tok.startswith("-"):
                    targets.append(rest.pop(0) if tok.startswith("-") else tok)
            yield targets


def _command_installs():
    """(where, targets) of every ``pip install`` in a manifest's commands (ray up setup, container command/args)."""
    for name, doc in _docs().items():
        for string in _strings(doc):
            if "pip install" in string:
                for targets in _pip_installs(string):
                    yield f"{name}: {string!r}", targets


def _missing(where, requirements):
    """Core dependencies ``requirements`` lacks, and the ones it pins differently from pyproject.toml."""
    core = _core_dependencies()
    if any(PROJECT.match(r) for r in requirements):
        return []  # installs the project itself: pip resolves its dependencies
    listed = {_dist(Requirement(r).name): str(Requirement(r).specifier) for r in requirements}
    problems = [f"{where}: misses {d}{core[d]}" for d in sorted(core) if d not in listed and d not in PROVIDED_BY_IMAGE]
    problems += [
        f"{where}: {d}{listed[d]} but pyproject.toml says {d}{core[d]}"
        for d in sorted(core)
        if d in listed and listed[d] != core[d]
    ]
    return problems


def test_every_runtime_env_and_install_command_carries_the_core_dependencies():
    assert {"peft", "transformers", "deepspeed"} <= set(_core_dependencies())
    checked, problems = [], []
    for where, env in _runtime_envs():
        packages = _env_packages(env)
        if packages is not None:
            checked.append(where)
            problems += _missing(where, packages)
    for where, targets in _command_installs():
        checked.append(where)
        problems += _missing(where, targets)
    assert not problems, "\n".join(problems)
    assert any(w == "runtime_env.yaml" for w in checked) and any("rayjob" in w for w in checked), checked
    assert any(w.startswith("ray-up-") for w in checked), checked


def test_the_dependency_check_reads_commands_and_spots_a_gap():
    assert list(_pip_installs('cd /home/ray/rcs-ray && pip install -e ".[vllm]" && echo ok')) == [[".[vllm]"]]
    assert list(_pip_installs("python -m pip install -U -c c.txt numpy>=1.24 peft")) == [["numpy>=1.24", "peft"]]
    assert _missing("x", [".[vllm]"]) == [] and _missing("x", ["rcs-ray[vllm]"]) == []
    full = [f"{d}{spec}" for d, spec in _core_dependencies().items() if d not in PROVIDED_BY_IMAGE]
    assert _missing("x", full) == []
    assert _missing("x", [r for r in full if not r.startswith("peft")]) == ["x: misses peft>=0.15"]
    assert _missing("x", [r.replace("pyyaml", "PyYAML").replace("omegaconf", "OmegaConf") for r in full]) == []
    assert _missing("x", [r.replace("numpy>=1.24", "numpy>=2") for r in full]) == [
        "x: numpy>=2 but pyproject.toml says numpy>=1.24"
    ]
    assert _dist("Foo_Bar.baz") == _dist("foo-bar-baz")


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
    forced = {name: _forced(doc) for name, doc in _docs().items() if _forced(doc)}
    assert not forced, f"offline mode is the user's choice (leave it commented out): {forced}"


def test_the_offline_check_finds_each_form():
    assert _forced({"env_vars": {"HF_HUB_OFFLINE": "1"}}) == [("HF_HUB_OFFLINE", "1")]
    assert _forced({"env": [{"name": "TRANSFORMERS_OFFLINE", "value": "true"}]}) == [("TRANSFORMERS_OFFLINE", "true")]
    assert _forced({"run_options": ["-e HF_DATASETS_OFFLINE=1"]}) == [("HF_DATASETS_OFFLINE", "1")]
    assert _forced({"runtimeEnvYAML": "env_vars:\n  HF_HUB_OFFLINE: '1'\n"}) == [("HF_HUB_OFFLINE", "1")]
    assert _forced({"env_vars": {"HF_HUB_OFFLINE": "0"}}) == []
