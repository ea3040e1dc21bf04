"""A step's outputs appear as a set or not at all; disk errors are one line naming the path; damaged state is set
aside with a warning or stopped on with one line naming the remedy (issue 22, items 2 and 3). Disk faults are
injected at the storage layer here; tests/ray/test_faults.py fills a real filesystem."""

import errno
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rcs_ray.data.pairs import group_table
from rcs_ray.errors import RcsInputError
from rcs_ray.storage import DiskError, OutputSet, atomic_path, disk_error_in, integrity

pytestmark = pytest.mark.unit


def _row(pid, failure=None):
    return {
        "prompt_id": pid,
        "prompt": f"ask {pid}",
        "candidates": ["a", "b"],
        "sources": ["sampled", "sampled"],
        "candidate_tokens": [1, 1],
        "reward__h": [1.0, 0.0],
        "chosen_index": None if failure else 0,
        "rejected_index": None if failure else 1,
        "failure_reason": failure,
        "seconds__generate": 0.5,
    }


def _sample(out, pids):
    from rcs_ray.sampling.writer import OutputWriter

    w = OutputWriter(str(out), ["h"], "h", candidates=True)
    try:
        w.write(group_table([_row(p) for p in pids], False), 0)
        return w.commit({})
    except BaseException:
        w.abort()
        raise


def _files(d):
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d)) if not n.startswith(".")}


def test_a_full_disk_while_writing_names_the_file_and_leaves_the_earlier_set_intact(tmp_path, monkeypatch):
    out = tmp_path / "sampling"
    _sample(out, ["p", "q"])
    (out / "notes.txt").write_text("mine")  # a user's own file in an --out directory
    before = _files(out)
    assert sorted(before) == ["candidates.parquet", "failed.parquet", "notes.txt", "pairs.parquet", "stats.json"]

    def full(self, table, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(DiskError) as caught:
        _sample(out, ["p", "q", "r"])
    msg = str(caught.value)
    assert msg.startswith(f"{out}/") and ".parquet: no space left on the device (writing " in msg
    assert "bytes" in msg and "free space there" in msg and "\n" not in msg
    assert _files(out) == before  # the earlier complete set, byte for byte
    assert sorted(os.listdir(tmp_path)) == ["sampling"]  # no staging directory left behind
    monkeypatch.undo()
    stats = _sample(out, ["p", "q", "r"])  # space freed: the rerun finishes
    assert stats["pairs"] == 3 and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
def test_a_write_that_is_not_permitted_is_one_line(tmp_path, code, words):
    with pytest.raises(DiskError, match=rf"^{tmp_path}/stats.json: {words} \(writing 2 bytes\): make it writable"):
        with atomic_path(str(tmp_path / "stats.json")) as tmp:
            with open(tmp, "w") as fh:
                fh.write("{}")
            raise OSError(code, os.strerror(code))
    assert os.listdir(tmp_path) == []


def test_a_remote_workers_disk_error_is_found_in_its_text():
    err = RuntimeError("Training failed:\nTraceback ...\nOSError: [Errno 28] No space left on device: '/ckpt/x.pt'")
    found = disk_error_in(err, "/out/stage1/train/checkpoints")
    assert isinstance(found, DiskError) and str(found).startswith("/out/stage1/train/checkpoints: no space left")
    assert disk_error_in(RuntimeError("[Errno 2] No such file"), "/x") is None


def test_a_training_output_set_commits_its_summary_last_and_drops_names_it_lacks(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "train_summary.json").write_text("old")
    (tmp_path / "features.parquet").write_text("kept")
    outputs = OutputSet(
        str(tmp_path), ["model", "adapter", "metrics.jsonl", "train_summary.json"], last="train_summary.json"
    )
    (tmp_path / outputs.tmp / "model").mkdir(parents=True)
    (tmp_path / outputs.tmp / "metrics.jsonl").write_text("{}\n")
    outputs.abort()  # a failed export: the old set is untouched
    assert (tmp_path / "train_summary.json").read_text() == "old" and (tmp_path / "adapter").is_dir()
    outputs = OutputSet(
        str(tmp_path), ["model", "adapter", "metrics.jsonl", "train_summary.json"], last="train_summary.json"
    )
    (tmp_path / outputs.tmp / "model").mkdir(parents=True)
    (tmp_path / outputs.tmp / "train_summary.json").write_text("new")
    outputs.commit()
    assert sorted(os.listdir(tmp_path)) == ["features.parquet", "model", "train_summary.json"]
    assert (tmp_path / "train_summary.json").read_text() == "new"


def test_problem_finds_truncated_files_of_every_kind(tmp_path):
    import torch
    from safetensors.torch import save_file

    pq.write_table(pa.table({"x": list(range(100))}), tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    torch.save({"w": torch.zeros(64)}, tmp_path / "a.pt")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.zeros(256)}, model / "model.safetensors")
    whole = ["a.parquet", "a.json", "a.jsonl", "a.pt", "model"]
    assert [integrity.problem(str(tmp_path / n)) for n in whole] == [None] * 5
    for name in ("a.parquet", "a.json", "a.jsonl", "a.pt", "model/model.safetensors"):
        with open(tmp_path / name, "r+b") as fh:
            fh.truncate(max(1, os.path.getsize(tmp_path / name) - 20))
    found = [integrity.problem(str(tmp_path / n)) for n in whole]
    assert all(found), found
    assert found[4].startswith("model.safetensors: ") and "truncated" in found[4]
    assert integrity.problem(str(tmp_path / "absent.json")) == "missing"


def test_a_damaged_lock_is_set_aside_and_taken_over(tmp_path, capsys, monkeypatch):
    from rcs_ray.storage import lock

    monkeypatch.setattr(lock, "UNREADABLE_TRIES", 2)
    (tmp_path / ".rcs-ray.lock").write_text('{"host": "h", "pi')  # truncated by a full disk
    with lock.RunLock(str(tmp_path), "rcs-ray run x.yaml"):
        assert json.loads((tmp_path / ".rcs-ray.lock").read_text())["command"] == "rcs-ray run x.yaml"
    out = capsys.readouterr().out
    assert f"warning: run lock {tmp_path}/.rcs-ray.lock cannot be read: set aside (kept as" in out
    (tmp_path / ".rcs-ray.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": "x"}))
    with lock.RunLock(str(tmp_path), "rcs-ray run y.yaml"):  # a record with a damaged pid: gone
        pass


def test_a_damaged_manifest_or_output_is_set_aside_and_its_step_redone(tmp_path, capsys):
    from rcs_ray.workflow import _Manifest

    path = tmp_path / "manifest.json"
    path.write_text('{"stage": 2, "steps": {"sample": {"status": "do')
    m = _Manifest(str(path), 2, "helpful")
    assert m.data == {"stage": 2, "objective": "helpful", "steps": {}}
    assert "warning: manifest" in capsys.readouterr().out and not path.exists()
    stats = tmp_path / "stats.json"
    stats.write_text('{"pairs": 3')
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"x": [1]}), pairs)
    m.record("sample", {"a": 1}, {"pairs": str(pairs), "stats": str(stats)}, {}, 1.0)
    assert m.done("sample", {"a": 1}) is None
    assert f"warning: sample output {stats} cannot be read: set aside" in capsys.readouterr().out
    stats.write_text('{"pairs": 3}')
    assert m.done("sample", {"a": 1})["status"] == "done"


def test_a_damaged_feature_cache_is_computed_again(tmp_path, monkeypatch, capsys):
    from rcs_ray.train import refs

    (tmp_path / "features.json").write_text('{"key": ')
    assert refs.cached_key(str(tmp_path)) is None and "feature cache key" in capsys.readouterr().out
    fresh = pa.table({"index": [0]})
    monkeypatch.setattr(refs, "cache_key", lambda *a: "k")
    monkeypatch.setattr(refs, "_model_stamp", lambda path: [])
    monkeypatch.setattr(refs, "_run_pipeline", lambda *a: fresh)
    (tmp_path / "features.json").write_text(json.dumps({"key": "k"}))
    (tmp_path / "features.parquet").write_bytes(b"PAR1 truncated")
    settings = refs.FeatureSettings(tokenizer="t", pad_token_id=0, max_length=8)
    features, reused = refs.compute_features(pa.table({"index": [0]}), {}, settings, cache_dir=str(tmp_path))
    assert features.equals(fresh) and not reused  # computed again, not read from the damaged cache
    assert "feature cache" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "features.parquet").equals(fresh)  # the cache is whole again


def test_a_damaged_checkpoint_stops_with_one_line_and_the_remedy(tmp_path):
    import torch

    from rcs_ray.train.launch import SNAPSHOT, check_checkpoints

    run = tmp_path / "checkpoints" / "t-stage1"
    (run / "checkpoint_1").mkdir(parents=True)
    torch.save({"w": torch.zeros(64)}, run / "checkpoint_1" / "state.pt")
    (run / SNAPSHOT).write_text(json.dumps({"checkpoint_results": [{"checkpoint_dir_name": "checkpoint_1"}]}))
    check_checkpoints(str(tmp_path), "t-stage1")  # whole: nothing to say
    with open(run / "checkpoint_1" / "state.pt", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(
        RcsInputError,
        match=rf"^{run}/checkpoint_1/state.pt cannot be read \(.*\): the training "
        rf"run cannot resume from it; remove {run} to train this stage",
    ):
        check_checkpoints(str(tmp_path), "t-stage1")
    (run / SNAPSHOT).write_text('{"checkpoint_res')
    with pytest.raises(RcsInputError, match="checkpoint_manager_snapshot.json cannot be read"):
        check_checkpoints(str(tmp_path), "t-stage1")
