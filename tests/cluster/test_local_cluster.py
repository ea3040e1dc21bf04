"""A real two-node Ray cluster on this machine: `ray start --head` + `ray start --address` (logical GPUs and custom
resources); the tiny K = 2 `run` job stopped by `ray job stop` and resumed by `ray job submit`, its outputs, and where
every actor of both jobs landed; a local run beside the cluster starts its own Ray."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    from cluster.local_cluster import LocalCluster

    c = LocalCluster(head_cpus=2, worker_cpus=4, worker_gpus=2)
    try:
        c.up(timeout=180)
        yield c
    finally:
        c.down(timeout=10)  # `ray start --block` may take its own 30 s after SIGTERM: then its group is killed
        leftovers = c.leftovers()
        import shutil

        shutil.rmtree(c.temp_root, ignore_errors=True)
        assert not leftovers, f"processes of the local cluster still running: {leftovers}"


def test_ray_job_stop_then_ray_job_submit_resumes_finishes_and_places_actors_by_resources(
    cluster, tiny_world, tmp_path
):
    # One run, two jobs. `ray job stop` sends SIGTERM to the job's processes and SIGKILL RAY_JOB_STOP_WAIT_TIME_S
    # later (Ray's default 3 s; the runtime envs in cluster/ set 30, as a Kubernetes grace period): the first job,
    # stopped while stage 2 samples, stops cleanly well within it. The same command submitted again with
    # `ray job submit` (the CLI) resumes from the manifests, finishes, and every actor of both jobs ran where its
    # resources are.
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    out = tmp_path / "out"
    cache = os.path.join(REPO_ROOT, ".cache", "tinyworld")
    args = [
        "python",
        "jobs/run.py",
        "configs/tiny/cluster.yaml",
        f"tinyworld.cache_dir={cache}",
        f"output_dir={out}",
        "stages.0.train.max_steps=2",
        "stages.1.train.max_steps=2",
        "stages.1.data.limit=256",  # sampling lasts long enough to be stopped in (64 ended in 6 s, unseen)
        "sampling.n=8",
        "train.batch_size=4",
        "--no-progress",
    ]
    client = JobSubmissionClient(cluster.dashboard)
    stop_wait = {"RAY_JOB_STOP_WAIT_TIME_S": "30"}
    first = client.submit_job(entrypoint=" ".join(args), runtime_env={"working_dir": REPO_ROOT, "env_vars": stop_wait})
    deadline = time.time() + 600
    while not any(
        "GenerateStage" in (a.class_name or "")  # stage 2 is sampling
        for a in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)
    ):
        assert time.time() < deadline and client.get_job_status(first) in (JobStatus.PENDING, JobStatus.RUNNING), (
            client.get_job_logs(first)[-3000:]
        )
        time.sleep(0.2)
    t0 = time.time()
    client.stop_job(first)
    while client.get_job_status(first) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
        time.sleep(0.2)
    seconds = time.time() - t0
    logs = client.get_job_logs(first)
    assert client.get_job_status(first) == JobStatus.STOPPED and seconds < 30, logs[-3000:]
    assert "SIGTERM received during rcs-ray run / stage 2 (sampling)" in logs, logs[-3000:]
    assert "interrupted during rcs-ray run / stage 2 (sampling)" in logs
    assert not (out / ".rcs-ray.lock").exists()  # a clean stop, not a kill

    res = cluster.submit(args, env_vars=stop_wait, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    sub = re.search(r"Job '(raysubmit_\w+)' succeeded", log)
    assert sub and client.get_job_status(sub.group(1)) == JobStatus.SUCCEEDED, log[-2000:]
    assert "stage 1 (harmless) (unchanged, skipped: train)" in log  # resumed from its manifests
    check_outputs(out, prompts=256)
    check_placement(cluster, jobs=2)


def check_outputs(out, prompts):
    """Both stages trained and exported; stage 2 accounts for every prompt with RC pairs."""
    for k in (1, 2):
        manifest = json.loads((out / f"stage{k}" / "manifest.json").read_text())
        assert manifest["steps"]["train"]["status"] == "done"
        assert (out / f"stage{k}" / "train" / "model" / "config.json").is_file()
    manifest = json.loads((out / "stage2" / "manifest.json").read_text())
    assert manifest["steps"]["sample"]["stats"]["prompts"] == prompts
    pairs = pq.read_table(out / "stage2" / "sampling" / "pairs.parquet").to_pylist()
    failed = pq.read_table(out / "stage2" / "sampling" / "failed.parquet").num_rows
    assert pairs and len(pairs) + failed == prompts
    for k in (1, 2):
        summary = json.loads((out / f"stage{k}" / "train" / "train_summary.json").read_text())
        assert summary["reference_pass"] == "training workers"  # the policy it starts from is the reference
    c = np.array([p["chosen_rewards"] for p in pairs])
    r = np.array([p["rejected_rewards"] for p in pairs])
    assert (c[:, 0] - r[:, 0] >= -0.5).all() and (c[:, 1] > r[:, 1]).all()  # RC: harmless (margin), helpful


def check_placement(cluster, jobs):
    """Where every actor of the ``jobs`` submitted runs ran (configs/tiny/cluster.yaml's resources)."""
    from ray.util.state import list_actors, list_nodes, list_placement_groups

    nodes = list_nodes(address=cluster.dashboard, detail=True)
    assert len(nodes) == 2
    head = next(n.node_id for n in nodes if n.is_head_node)
    worker = next(n.node_id for n in nodes if not n.is_head_node)
    actors = [a for a in list_actors(address=cluster.dashboard, detail=True, limit=10_000) if a.node_id]

    def placed(name):
        found = [a for a in actors if name in (a.class_name or "")]
        assert found, f"no {name} actor was placed: {sorted({a.class_name for a in actors})}"
        return found

    groups = {p.placement_group_id: p for p in list_placement_groups(address=cluster.dashboard, detail=True)}
    for a in placed("GenerateStage"):  # TP = 2: in its own placement group of 2 GPU bundles, worker node
        assert a.node_id == worker
        assert a.placement_group_id in groups
        pg = groups[a.placement_group_id]
        assert pg.name.startswith("rcs-generate-")
        assert [b["unit_resources"].get("GPU") for b in pg.bundles] == [1.0, 1.0]
        assert {b["node_id"] for b in pg.bundles} == {worker}  # STRICT_PACK: one node
        assert pg.bundles[0]["unit_resources"].get("generator") == 1.0
        assert not any(k.startswith("GPU") for k in a.required_resources)  # its TP workers hold the GPUs
    generate = [p for p in groups.values() if p.name.startswith("rcs-generate-")]
    assert len(generate) == jobs  # one group per actor (none that no actor uses holds GPUs)
    assert all(p.state == "REMOVED" for p in generate)  # GPUs released, the stopped job's too
    for a in placed("ScoreStage"):  # the rule scorers: where `scorer` is (the head)
        assert a.node_id == head and a.required_resources.get("scorer") == 1.0
    # each stage trains against the policy it starts from: its GPU workers computed the reference log-probs, and no
    # separate reference actor started
    assert not [a for a in actors if "ReferenceLogps" in (a.class_name or "")]
    workers = placed("RayTrainWorker")
    assert len(workers) == 4  # 2 per stage
    for a in workers:
        assert a.node_id == worker and any(k.startswith("GPU_group") for k in a.required_resources)


def test_a_run_without_an_address_starts_its_own_ray_beside_a_running_cluster(cluster):
    # `ray.address: null` means a new local Ray, even where `ray start` left its address file (what a bare ray.init()
    # joins, refusing num_cpus when it does). The file here names this cluster, in the Ray temp dir the run uses.
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths live under it
    os.makedirs(os.path.join(ray_tmp, "ray"))
    with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as fh:
        fh.write(cluster.address)
    code = (
        "import ray; from rcs_ray.config import RayConfig; from rcs_ray.ray_runtime import init_ray, started_ray; "
        "init_ray(RayConfig(num_cpus=1, object_store_memory_mb=128)); "
        "print(started_ray(), ray.get_runtime_context().gcs_address)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env={**env, "RAY_TMPDIR": ray_tmp},
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started, gcs = proc.stdout.split()[-2:]
    assert started == "True" and gcs != cluster.address
