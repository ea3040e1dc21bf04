"""Nodes that die, on a multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, Ray's own test
cluster: a head and two worker nodes, each its own raylet), with `rcs-ray` attached as a separate driver:

- a worker node killed (not gracefully) while stage 2 samples: every prompt is accounted for and the pairs are
  those of an undisturbed run (per-sample seeds: a restarted actor generates the same samples);
- the node of the Ray Train worker killed mid-training: Ray Train restarts the worker group on the remaining node
  from the last checkpoint (``train.max_failures``), and the final weights equal an uninterrupted run's.
"""

import os
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")
WORKER = {"num_cpus": 2, "resources": {"gen": 2, "trainer": 1}}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 256 << 20})
    for _ in range(2):
        c.add_node(object_store_memory=256 << 20, **WORKER)
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


class Cli:
    """`rcs-ray ...` attached to the test cluster, in a subprocess, its output collected."""

    def __init__(self, cluster, *args):
        env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rcs_ray",
                *args,
                f"ray.address={cluster.address}",
                "ray.num_cpus=null",
                "ray.object_store_memory_mb=null",
                "--no-progress",
            ],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def wait(self, timeout=600):
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.5)
        assert code == 0, "".join(self.lines[-60:])


def _worker_nodes(cluster):
    return [n for n in cluster.list_all_nodes() if n is not cluster.head_node]


def _kill_node_of(cluster, class_name: str, timeout=300.0, after=lambda: True):
    """Wait until an actor whose class names ``class_name`` is alive on a worker node (and ``after()``), then kill
    that node without a graceful stop; returns the killed node's id."""
    from ray.util.state import list_actors

    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [
            a
            for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)
            if class_name in (a.class_name or "")
        ]
        nodes = {n.node_id: n for n in _worker_nodes(cluster)}
        on_worker = [a for a in alive if a.node_id in nodes]
        if on_worker and after():
            node = nodes[on_worker[0].node_id]
            cluster.remove_node(node, allow_graceful=False)
            cluster.add_node(object_store_memory=256 << 20, **WORKER)  # capacity back for the next test
            return on_worker[0].node_id
        time.sleep(0.2)
    raise AssertionError(f"no {class_name} actor appeared on a worker node")


def test_a_node_killed_while_sampling_changes_nothing(cluster, tiny_world, tmp_path):
    args = [
        "sample",
        K2,
        "stages.1.data.limit=512",
        "sampling.n=8",
        "sampling.num_actors=2",
        "sampling.resources={gen: 1}",
    ]
    calm = Cli(cluster, *args, "--out", str(tmp_path / "calm"))
    calm.wait()
    rough = Cli(cluster, *args, "--out", str(tmp_path / "rough"))
    killed = _kill_node_of(cluster, "GenerateStage", after=lambda: time.sleep(1.0) or True)
    rough.wait()
    assert killed
    a, b = (pq.read_table(tmp_path / d / "pairs.parquet") for d in ("calm", "rough"))
    fa, fb = (pq.read_table(tmp_path / d / "failed.parquet") for d in ("calm", "rough"))
    assert a.num_rows + fa.num_rows == 512 == b.num_rows + fb.num_rows  # every prompt accounted for
    assert a.equals(b) and fa.equals(fb)  # the undisturbed run's pairs


def test_a_node_killed_while_training_resumes_on_the_rest_with_the_same_weights(cluster, tiny_world, tmp_path):
    from safetensors.torch import load_file

    args = [
        "train",
        K2,
        "--stage",
        "1",
        "stages.0.data.limit=192",  # one epoch of the 24 steps x 8 pairs
        "stages.0.train.max_steps=24",
        "train.num_workers=1",
        "train.batch_size=8",
        "train.save_steps=4",
        "train.keep_checkpoints=null",
        "train.max_failures=2",
        "train.resources_per_worker={trainer: 1}",
    ]
    calm = Cli(cluster, *args, "--out", str(tmp_path / "calm"))
    calm.wait()
    ckpts = tmp_path / "rough" / "checkpoints"
    rough = Cli(cluster, *args, "--out", str(tmp_path / "rough"))
    _kill_node_of(cluster, "RayTrainWorker", after=lambda: len(list(ckpts.glob("*/checkpoint_*"))) >= 2)
    rough.wait()
    text = "".join(rough.lines)
    summary = (tmp_path / "rough" / "train_summary.json").read_text()
    assert '"resumed_from_step": 0' not in summary, text[-3000:]  # it did restart from a checkpoint
    w0 = load_file(tmp_path / "calm" / "model" / "model.safetensors")
    w1 = load_file(tmp_path / "rough" / "model" / "model.safetensors")
    assert w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)
