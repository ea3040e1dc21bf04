"""The docs site builds with ``mkdocs build --strict`` (a broken link, a page missing from the nav or an unknown
option fails it), and every page in docs/ is in the nav."""

import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_docs_page_is_in_the_nav():
    with open(os.path.join(REPO, "mkdocs.yml"), encoding="utf-8") as fh:
        nav = yaml.safe_load(fh)["nav"]
    listed = {page for item in nav for page in item.values()}
    assert listed == {f for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md")}


def test_the_site_builds_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "findings" / "index.html").is_file() and (tmp_path / "index.html").is_file()
