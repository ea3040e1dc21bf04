"""What the cluster installs vs pyproject.toml: every runtime env and every install command in the manifests under
cluster/ carries the package's core dependencies (the Ray image provides ``ray``).

Parsed with yaml.safe_load only (:mod:`tests.cluster_manifests`).
"""

import os
import re
import shlex

import pytest
import yaml
from packaging.requirements import Requirement

from tests.cluster_manifests import CLUSTER, REPO, docs, kind, load, strings

pytestmark = pytest.mark.unit

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
    out = [("runtime_env.yaml", load(os.path.join(CLUSTER, "runtime_env.yaml")))]
    for name, doc in kind("RayJob").items():
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
    for name, doc in docs().items():
        for string in strings(doc):
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
