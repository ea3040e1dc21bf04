"""Every repository path the README and the docs (docs/*.md) name exists: configs (``configs/...yaml``, globs
included), scripts (``benchmarks/*.py``, ``jobs/*.py``, ``cluster/*``), modules and tests (``rcs_ray/...py``,
``tests/...py``), and the source directories they point at (``rcs_ray/.../``, ``tests/.../``, ``configs/.../``);
the README links every docs page, and every link between the pages resolves."""

import glob
import os
import re

import pytest

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(REPO, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
ROOTS = ("configs", "benchmarks", "jobs", "cluster", "rcs_ray", "tests")
# A path starts at a word boundary that is not inside another path or URI (s3://bucket/configs/... is not ours).
_PATH = re.compile(r"(?<![\w./:~-])((?:%s)/[\w.*{},/-]*)" % "|".join(ROOTS))
_BRACES = re.compile(r"\{([^{}]*)\}")
ILLUSTRATIVE = {"configs/x.yaml"}  # the example file name in a sample error message


def expand(path: str) -> list:
    """``jobs/{run,sample}.py`` -> ``[jobs/run.py, jobs/sample.py]`` (shell brace expansion, nested too)."""
    match = _BRACES.search(path)
    if match is None:
        return [path]
    return [p for alt in match.group(1).split(",") for p in expand(path[: match.start()] + alt + path[match.end() :])]


def checked(path: str) -> bool:
    """The paths this test holds the README to (the rest, e.g. benchmark output folders, may not exist yet)."""
    root = path.split("/", 1)[0]
    if path.endswith("/"):
        return root in ("configs", "rcs_ray", "tests", "cluster", "jobs")
    if root == "configs":
        return path.endswith(".yaml")
    if root == "cluster":
        return True
    return path.endswith(".py")


def readme_paths() -> list:
    text = ""
    for page in PAGES:
        with open(page, encoding="utf-8") as fh:
            text += fh.read() + "\n"
    found = set()
    for raw in _PATH.findall(text):
        raw = raw.rstrip(".,")
        if raw in ILLUSTRATIVE:
            continue
        found.update(p for p in expand(raw) if checked(p))
    return sorted(found)


def exists(path: str) -> bool:
    full = os.path.join(REPO, path)
    if any(ch in path for ch in "*?["):
        return bool(glob.glob(full))
    return os.path.isdir(full) if path.endswith("/") else os.path.isfile(full)


def test_the_readme_names_paths():
    paths = readme_paths()
    assert "configs/tiny/k2.yaml" in paths and "jobs/run.py" in paths and "rcs_ray/rc.py" in paths


def test_every_path_the_readme_names_exists():
    missing = [p for p in readme_paths() if not exists(p)]
    assert not missing, f"README.md or docs/ name paths that do not exist: {missing}"


def test_the_readme_links_every_docs_page_and_each_link_resolves():
    with open(README, encoding="utf-8") as fh:
        readme = fh.read()
    for page in PAGES[1:]:
        if os.path.basename(page) != "index.md":  # the site's home page: the README's own role
            assert f"(docs/{os.path.basename(page)})" in readme, page
    for page in PAGES:
        with open(page, encoding="utf-8") as fh:
            text = fh.read()
        for target in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text):
            assert os.path.isfile(os.path.join(os.path.dirname(page), target)), (page, target)


def test_brace_expansion_and_the_path_pattern():
    assert expand("jobs/{run,sample}.py") == ["jobs/run.py", "jobs/sample.py"]
    assert _PATH.findall("see `configs/paper/*.yaml` and s3://b/configs/nope.yaml or outputs/configs/x.yaml") == [
        "configs/paper/*.yaml"
    ]
    assert not checked("benchmarks/reports/scale_sim/long") and checked("cluster/runtime_env.yaml")
