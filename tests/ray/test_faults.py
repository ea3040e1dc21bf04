"""Faults a real run meets, end to end through the CLI (issue 22, items 2 and 3):

- `rcs-ray sample` into a filesystem that is full (a tmpfs the test mounts, where permitted): one line naming the
  file and the bytes, exit 2, the earlier complete outputs byte for byte, and a rerun after freeing space finishes;
  the same filesystem read-only: one line;
- a truncated stage manifest and a damaged stats file of a finished `rcs-ray run`: the rerun sets both aside with a
  warning, redoes what they recorded and finishes;
- a truncated checkpoint file: `rcs-ray train` stops with one line naming it and the remedy.
(The same faults injected at the storage layer: tests/unit/test_outputs_and_damage.py.)
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")
SMALL = [
    "stages.0.data.limit=64",
    "stages.0.train.max_steps=2",
    "stages.1.data.limit=64",
    "train.max_steps=2",
    "train.num_workers=1",
    "sampling.n=4",
]


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


def test_a_damaged_manifest_stats_file_and_checkpoint(tiny_world, tmp_path, joined):
    out = tmp_path / "run"
    run = ["run", K2, f"output_dir={out}", "--no-progress", *SMALL, joined]
    proc, _ = cli(*run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest, stats = out / "stage1" / "manifest.json", out / "stage2" / "sampling" / "stats.json"
    with open(manifest, "r+b") as fh:  # stage 1's record, cut by a full disk
        fh.truncate(40)
    stats.write_text('{"stage": 2, "pairs":')  # stage 2's stats, half written by hand
    first_pairs = (out / "stage2" / "sampling" / "pairs.parquet").read_bytes()
    proc, _ = cli(*run)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"warning: manifest {manifest} cannot be read: set aside" in proc.stdout
    assert f"warning: sample output {stats} cannot be read: set aside" in proc.stdout
    assert json.loads(stats.read_text())["prompts"] == 64  # sampled again
    assert (out / "stage2" / "sampling" / "pairs.parquet").read_bytes() == first_pairs  # the same pairs
    assert json.loads(manifest.read_text())["steps"]["train"]["status"] == "done"  # recorded again

    ckpts = out / "stage1" / "train" / "checkpoints" / "tiny-k2-stage1"
    state = sorted(ckpts.glob("checkpoint_*/deepspeed/mp_rank_00_model_states.pt"))[-1]
    with open(state, "r+b") as fh:
        fh.truncate(1000)
    proc, errors = cli("train", K2, f"output_dir={out}", "--no-progress", *SMALL, joined, "--stage", "1")
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {state} cannot be read (") and f"remove {ckpts} to train" in errors[0]
