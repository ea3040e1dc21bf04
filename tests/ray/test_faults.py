"""Faults a real run meets, end to end through the CLI (issue 22, items 2 and 3):

- `rcs-ray sample` into a filesystem that is full (a tmpfs the test mounts, where permitted): one line naming the
  file and the bytes, exit 2, the earlier complete outputs byte for byte, and a rerun after freeing space finishes;
  the same filesystem read-only: one line.

(A truncated manifest, a damaged stats file and a truncated checkpoint of a finished run: tests/ray/test_workflow.py,
on its run directory. The same faults injected at the storage layer: tests/unit/test_outputs_and_damage.py.)
"""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")


def cli(*args, timeout=600):
    """``rcs-ray ARGS`` in a subprocess; its one-line ``error:`` lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "rcs_ray", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return proc, errors


@pytest.fixture
def joined(ray_session):
    """``ray.address=...`` of the test session's Ray: each CLI run joins it, as a driver joins a cluster, instead of
    starting and stopping a local Ray of its own (the faults here are on disk, not in Ray's start-up)."""
    return f"ray.address={ray_session.get_runtime_context().gcs_address}"


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs mounted by the test (root and a kernel that permits it), unmounted after."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the storage-layer tests cover it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _files(d):
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


def test_a_full_and_a_read_only_disk_while_sampling(tiny_world, small_fs, joined):
    out = small_fs / "sampling"
    args = ["sample", K2, "--out", str(out), "--no-progress", joined, "sampling.n=4"]
    proc, errors = cli(*args, "stages.1.data.limit=16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = _files(out)
    assert sorted(before) == ["candidates.parquet", "failed.parquet", "pairs.parquet", "stats.json"]
    free = shutil.disk_usage(small_fs).free
    with open(small_fs / "filler", "wb") as fh:  # leave about 20 KiB
        fh.write(b"\0" * (free - (20 << 10)))
    proc, errors = cli(*args, "stages.1.data.limit=256")
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {out}/") and "no space left on the device (writing " in errors[0]
    assert _files(out) == before  # the earlier complete set, byte for byte
    assert sorted(os.listdir(small_fs)) == ["filler", "sampling"]  # nothing half-written left beside it
    os.remove(small_fs / "filler")
    proc, errors = cli(*args, "stages.1.data.limit=256")  # space freed: the rerun finishes
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"prompts": 256' in (out / "stats.json").read_text()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    proc, errors = cli(*args, "stages.1.data.limit=16")
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "read-only file system" in errors[0] and str(out) in errors[0]
