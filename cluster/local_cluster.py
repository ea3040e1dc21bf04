"""A real two-node Ray cluster on this machine, for trying the cluster path (and testing it) without a cloud.

``up`` runs ``ray start --head`` and ``ray start --address`` for a second node, each with ``--block`` in its own
process group, on free local ports, its own temp dir, and logical resources: the head declares a ``scorer`` resource,
the worker 2 logical GPUs and a ``generator`` resource — so the GPU placement code (generation actors in
tensor-parallel placement groups, scorer pools by custom resource, Ray Train workers with ``use_gpu``) runs as on a GPU
cluster while the engines fall back to CPU. ``submit`` is ``ray job submit`` against its dashboard; ``down`` stops
exactly the processes ``up`` started (never ``ray stop``, which would stop every Ray on the machine).

    python cluster/local_cluster.py up                      # prints the dashboard address; state in .cache/
    python cluster/local_cluster.py submit -- python jobs/run.py configs/tiny/cluster.yaml
    python cluster/local_cluster.py status
    python cluster/local_cluster.py down

Used by ``tests/cluster/test_local_cluster.py``. Needs only ``ray[default]`` (the dashboard serves the job API).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script (`python cluster/local_cluster.py up`): the package is cluster/
    sys.path.insert(0, REPO)

from cluster.processes import alive, free_ports, processes_marked, ray_cli, send_signal  # noqa: E402

STATE = os.path.join(REPO, ".cache", "local-cluster.json")
HEAD_RESOURCES = {"scorer": 4}
WORKER_RESOURCES = {"generator": 4}
# Worker env of the local nodes: offline, the CPU DeepSpeed accelerator, no auth (a throwaway cluster on localhost).
NODE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}


@dataclass
class LocalCluster:
    """A head and one worker node started by ``ray start --block`` (see the module docstring)."""

    head_cpus: int = 2
    worker_cpus: int = 4
    worker_gpus: int = 2
    object_store_mb: int = 256
    temp_root: str = ""
    gcs_port: int = 0
    dashboard_port: int = 0
    pids: Dict[str, int] = field(default_factory=dict)
    log_dir: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(NODE_ENV)
        bindir = os.path.dirname(sys.executable)  # `python` in a job entrypoint is this interpreter
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, name: str, args: List[str]) -> None:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "w")
        proc = subprocess.Popen(
            [ray_cli(), "start", "--block", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        self.pids[name] = proc.pid

    def up(self, timeout: float = 120.0) -> "LocalCluster":
        """Start both nodes and wait until the cluster shows 2 alive nodes and the job API answers."""
        self.temp_root = self.temp_root or tempfile.mkdtemp(prefix="rcs-lc-", dir="/tmp")  # short: socket paths
        self.log_dir = os.path.join(self.temp_root, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        (self.gcs_port, self.dashboard_port, client, *rest) = free_ports(13)
        common = ["--disable-usage-stats", f"--object-store-memory={self.object_store_mb << 20}"]

        def node_ports(p):
            return [
                f"--node-manager-port={p[0]}",
                f"--object-manager-port={p[1]}",
                f"--dashboard-agent-listen-port={p[2]}",
                f"--dashboard-agent-grpc-port={p[3]}",
                f"--metrics-export-port={p[4]}",
            ]

        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={client}",
                f"--temp-dir={os.path.join(self.temp_root, 'head')}",
                f"--num-cpus={self.head_cpus}",
                "--num-gpus=0",
                f"--resources={json.dumps(HEAD_RESOURCES)}",
                *node_ports(rest[:5]),
                *common,
            ],
        )
        self._wait(lambda: self._nodes() >= 1, timeout, "the head node")
        self._start(
            "worker",
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={os.path.join(self.temp_root, 'worker')}",
                f"--num-cpus={self.worker_cpus}",
                f"--num-gpus={self.worker_gpus}",
                f"--resources={json.dumps(WORKER_RESOURCES)}",
                *node_ports(rest[5:10]),
                *common,
            ],
        )
        self._wait(lambda: self._nodes() >= 2, timeout, "the worker node")
        self._wait(self._jobs_api_up, timeout, "the job API")
        return self

    def _nodes(self) -> int:
        """Alive nodes, from the dashboard's state API (0 while it is not up)."""
        try:
            from ray.util.state import list_nodes

            return sum(n.state == "ALIVE" for n in list_nodes(address=self.dashboard, raise_on_missing_output=False))
        except Exception:  # noqa: BLE001 - not up yet
            return 0

    def _jobs_api_up(self) -> bool:
        try:
            from ray.job_submission import JobSubmissionClient

            JobSubmissionClient(self.dashboard).list_jobs()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            dead = [n for n, pid in self.pids.items() if not alive(pid)]
            if dead:
                raise RuntimeError(f"local cluster: `ray start` for {dead} exited; logs in {self.log_dir}")
            if ready():
                return
            time.sleep(1.0)
        raise TimeoutError(f"local cluster: {what} not up after {timeout:.0f} s; logs in {self.log_dir}")

    def submit(
        self,
        entrypoint: List[str],
        working_dir: str = REPO,
        env_vars: Optional[dict] = None,
        timeout: Optional[float] = 900.0,
        capture: bool = True,
    ) -> subprocess.CompletedProcess:
        """``ray job submit --address <dashboard> --working-dir <working_dir> -- <entrypoint>``, waiting for the end.

        Returns the finished ``ray job submit`` process (its stdout holds the job's log; returncode 0 = SUCCEEDED).
        """
        runtime_env = {"env_vars": dict(env_vars or {})}
        cmd = [
            ray_cli(),
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--working-dir",
            working_dir,
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            *entrypoint,
        ]
        return subprocess.run(cmd, env=self.env(), capture_output=capture, text=True, timeout=timeout)

    def down(self, timeout: float = 30.0) -> List[int]:
        """Stop what :meth:`up` started: SIGTERM each ``ray start --block`` (it stops its node's processes), then
        kill any process still running from this cluster's temp dir. Returns the pids that had to be killed."""
        import psutil

        for pid in self.pids.values():
            send_signal(pid, signal.SIGTERM)
        end = time.time() + timeout
        while time.time() < end and any(alive(p) for p in self.pids.values()):
            time.sleep(0.5)
        killed = []
        for pid in self.pids.values():
            if alive(pid):
                send_signal(-pid, signal.SIGKILL)  # its process group (start_new_session)
                killed.append(pid)
        procs = self._processes()
        for proc in procs:
            try:
                proc.kill()
                killed.append(proc.pid)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=timeout)
        self.pids = {}
        return killed

    def _processes(self) -> list:
        """Running processes of this cluster: its temp dir or GCS address on the command line."""
        return processes_marked([m for m in (self.temp_root, self.gcs_port and f"127.0.0.1:{self.gcs_port}") if m])

    def leftovers(self) -> List[str]:
        """``pid cmdline`` of processes of this cluster still running (should be none after :meth:`down`)."""
        out = []
        for proc in self._processes():
            try:
                out.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
        return out

    def __enter__(self) -> "LocalCluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()
        shutil.rmtree(self.temp_root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="a two-node Ray cluster on this machine (logical GPUs)")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--worker-gpus", type=int, default=2)
    up.add_argument("--worker-cpus", type=int, default=4)
    sub.add_parser("status")
    sub.add_parser("down")
    sm = sub.add_parser("submit", help="ray job submit -- ENTRYPOINT...")
    sm.add_argument("entrypoint", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    state = None
    if os.path.exists(STATE):
        with open(STATE) as fh:
            state = LocalCluster(**json.load(fh))
    if a.command == "up":
        if state and any(alive(p) for p in state.pids.values()):
            print(f"already up: dashboard {state.dashboard} (state {STATE})")
            return 0
        c = LocalCluster(worker_gpus=a.worker_gpus, worker_cpus=a.worker_cpus).up()
        with open(STATE, "w") as fh:
            json.dump(asdict(c), fh)
        print(
            f"local cluster up: GCS {c.address}, dashboard {c.dashboard}\n"
            f"  export RAY_ADDRESS={c.dashboard}   # then: ray job submit --working-dir . -- python jobs/run.py ..."
        )
        return 0
    if state is None:
        print("no local cluster: run `python cluster/local_cluster.py up` first", file=sys.stderr)
        return 2
    if a.command == "status":
        print(json.dumps({**asdict(state), "alive_nodes": state._nodes()}, indent=1))
        return 0
    if a.command == "down":
        state.down()
        shutil.rmtree(state.temp_root, ignore_errors=True)
        os.remove(STATE)
        print("local cluster stopped")
        return 0
    entry = [t for t in a.entrypoint if t != "--"]
    if not entry:
        print("submit: give the entrypoint after --", file=sys.stderr)
        return 2
    return state.submit(entry, timeout=None, capture=False).returncode


if __name__ == "__main__":
    sys.exit(main())
