"""The workflow with every input and output at ``file://`` URIs (what ``s3://`` / ``gs://`` go through): outputs land
at the URI, a rerun with an empty local cache (another machine) skips the finished steps from the manifests there,
and a training step whose model went missing resumes from the Ray Train checkpoints stored at the URI."""

import json
import os
import shutil

import pytest

from rcs_ray import storage
from rcs_ray.config import load_config
from rcs_ray.workflow import run_workflow

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def uri(path) -> str:
    return "file://" + os.path.abspath(str(path))


def test_workflow_reads_and_writes_uris_and_resumes_from_them(tiny_world, ray_session, tmp_path):
    remote = tmp_path / "bucket"  # stands in for s3://bucket
    shutil.copytree(tiny_world.policy, remote / "models" / "policy")
    for name in ("stage1_harmless.jsonl", "stage2_helpful.jsonl"):
        shutil.copy(os.path.join(tiny_world.data_dir, name), remote / name)
    out = uri(remote / "run")
    cfg = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            f"output_dir={out}",
            f"policy.path={uri(remote / 'models' / 'policy')}",
            f"stages.0.data.path={uri(remote / 'stage1_harmless.jsonl')}",
            f"stages.1.data.path={uri(remote / 'stage2_helpful.jsonl')}",
            "stages.0.data.limit=32",
            "stages.0.train={max_steps: 2}",
            "stages.1.data.limit=8",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.num_workers=1",
            "sampling.n=4",
        ],
    )

    first = run_workflow(cfg, progress=False)
    assert [s.skipped for s in first.stages] == [[], []]
    assert [s.policy for s in first.stages] == [f"{out}/stage1/train/model", f"{out}/stage2/train/model"]
    run = remote / "run"
    for rel in (
        "stage1/manifest.json",
        "stage1/train/model/config.json",
        "stage1/train/metrics.jsonl",
        "stage1/train/train_summary.json",
        "stage1/train/run.json",
        "stage1/train/features.parquet",
        "stage2/sampling/pairs.parquet",
        "stage2/sampling/failed.parquet",
        "stage2/sampling/stats.json",
        "stage2/train/model/model.safetensors",
    ):
        assert (run / rel).is_file(), rel
    assert os.listdir(run / "stage2" / "train" / "checkpoints")  # Ray Train wrote straight to the URI
    m2 = json.loads(storage.read_text(f"{out}/stage2/manifest.json"))
    assert m2["steps"]["sample"]["outputs"]["pairs"] == f"{out}/stage2/sampling/pairs.parquet"
    assert m2["steps"]["sample"]["inputs"]["policy"] == first.stages[0].policy
    assert m2["steps"]["train"]["inputs"]["identity"]["pairs"] == f"{out}/stage2/sampling/pairs.parquet"
    assert json.loads((run / "stage2/train/train_summary.json").read_text())["model_dir"] == first.stages[1].policy
    weights = (run / "stage2/train/model/model.safetensors").read_bytes()
    metrics = (run / "stage2/train/metrics.jsonl").read_text()

    shutil.rmtree(storage.cache_root())  # another machine: nothing local, only what is at the URI
    again = run_workflow(cfg, progress=False)
    assert [s.skipped for s in again.stages] == [["train"], ["sample", "train"]]

    shutil.rmtree(run / "stage2" / "train" / "model")  # the step's output is gone: it runs again and resumes
    shutil.rmtree(storage.cache_root(), ignore_errors=True)  # from the finished checkpoint stored at the URI
    resumed = run_workflow(cfg, progress=False)
    assert [s.skipped for s in resumed.stages] == [["train"], ["sample"]]
    assert (run / "stage2/train/model/model.safetensors").read_bytes() == weights
    # restored, not retrained: the step timings come from the checkpoint's history
    assert (run / "stage2/train/metrics.jsonl").read_text() == metrics
