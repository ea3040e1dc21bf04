"""Runs that are safe to interrupt, repeat and share (each case fails on the code before these fixes):

- one run per output directory: a second `rcs-ray run` on it is refused in one line naming the holder; a stale lock
  is taken over;
- Ctrl-C during stage-2 sampling (of a run started with SIGINT ignored, as a background job is), while Ray Train starts,
  and SIGTERM during training of a two-stage `rcs-ray run` stop it within seconds, name the phase the signal landed
  in, exit 130 / 143 and leave no Ray process it started;
- a truncated safetensors file in each model role (policy, reference, reward model) is one line naming the file,
  exit 2, nothing created;
- orphaned checkpoints are removed, suspicious training data is counted (reruns that redo exactly what changed:
  tests/ray/test_workflow.py).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from rcs_ray.errors import RcsInputError

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")
SMALL = [
    "stages.0.data.limit=256",
    "stages.0.train.max_steps=4",
    "stages.1.data.limit=256",
    "train.max_steps=4",
    "train.num_workers=2",
    "sampling.n=8",
    "ray.num_cpus=2",
    "ray.object_store_memory_mb=256",
]


class Run:
    """`rcs-ray ...` in a subprocess with its output collected line by line.

    ``background``: start it as a background job of a non-interactive shell (``cmd &`` in a script, ``nohup``, CI
    runners) starts, with SIGINT ignored. Python then installs no Ctrl-C handler of its own: the cause of the lost
    Ctrl-C during sampling (rcs_ray.interrupts)."""

    def __init__(self, *args, background=False):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rcs_ray", *args],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=ignore,
        )
        self.lines = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True
        )
        self.reader.start()

    def wait_for(self, predicate, timeout=240.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            assert self.proc.poll() is None, "".join(self.lines[-30:])
            time.sleep(0.2)
        raise AssertionError(f"timed out; output:\n{''.join(self.lines[-30:])}")

    def interrupt(self, sig=signal.SIGINT, timeout=60.0) -> float:
        t0 = time.time()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return time.time() - t0

    @property
    def text(self):
        return "".join(self.lines)

    def landed_in(self) -> str:
        """The phase the signal landed in, as the run reported it."""
        found = re.findall(r"SIG(?:INT|TERM) received during (.+?): stopping", self.text)
        assert len(found) == 1, self.text[-3000:]
        return found[0]


def ray_processes_of(pid: int) -> list:
    """Processes of the Ray session a driver with ``pid`` started (their command lines name its session dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    pattern = re.compile(rf"session_[\d_-]+_{pid}(?:[/\s]|$)")
    return [line for line in out if pattern.search(line)]


def generation_actors() -> bool:
    """A generation actor of a sampling pool is running (its process title names the stage)."""
    return "GenerateStage" in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def assert_no_ray_left(pid: int, within: float = 15.0):
    deadline = time.time() + within
    while ray_processes_of(pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(pid), ray_processes_of(pid)


def test_ctrl_c_at_sampling_and_a_second_run_on_the_same_dir(tiny_world, tmp_path):
    out = tmp_path / "run"
    # 1,024 stage-2 prompts: the signal is sent as soon as a generation actor runs, and sampling lasts several seconds
    # after that. Started as a background job (SIGINT ignored at start): on the code before rcs_ray.interrupts the
    # signal was lost and the run went on and exited 0.
    first = Run("run", K2, f"output_dir={out}", *SMALL, "stages.1.data.limit=1024", background=True)
    first.wait_for(lambda: (out / ".rcs-ray.lock").exists())
    second = subprocess.run(
        [sys.executable, "-m", "rcs_ray", "run", K2, f"output_dir={out}", *SMALL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert second.returncode == 2 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"pid {first.proc.pid}" in errors[0] and "rcs-ray run" in errors[0] and "in use by" in errors[0]
    first.wait_for(generation_actors)  # stage 2 generates
    seconds = first.interrupt()
    assert first.proc.returncode == 130, first.text
    assert seconds < 15
    assert first.landed_in() == "rcs-ray run / stage 2 (sampling) / generating and scoring, round 1 of 1"
    assert "interrupted during rcs-ray run / stage 2 (sampling) / generating" in first.text
    assert "run the same command again" in first.text
    assert not (out / "stage2" / "sampling").exists()  # no half output
    assert not list((out / "stage2").glob("sampling.*"))  # and no staging left behind
    assert not (out / ".rcs-ray.lock").exists()
    assert_no_ray_left(first.proc.pid)


@pytest.mark.parametrize(
    "moment, sig", [("while Ray Train starts", signal.SIGINT), ("during training", signal.SIGTERM)]
)
def test_a_signal_in_training(tiny_world, tmp_path, moment, sig):
    # while Ray Train starts: the hand-over from the reference pass, before the workers exist (and before Ray Train
    # would install its own handler); during training: between steps. SIGTERM (`ray job stop`, Kubernetes) exits 143.
    out = tmp_path / "run"
    run = Run("run", K2, f"output_dir={out}", *SMALL, "stages.0.train.max_steps=64")
    if moment == "during training":
        run.wait_for(lambda: "[train] step" in run.text)
        assert "Failed to query Ray Train Controller actor state" not in run.text  # rcs_ray.worker_setup
    else:
        run.wait_for(lambda: "stage 1: training on" in run.text)
        time.sleep(1.0)
        assert "[train] step" not in run.text
    seconds = run.interrupt(sig)
    assert run.proc.returncode == 128 + sig, run.text
    assert seconds < 15
    assert run.landed_in() == "rcs-ray run / stage 1 (training) / Ray Train"
    assert "interrupted during rcs-ray run / stage 1 (training) / Ray Train" in run.text
    assert not (out / "stage1" / "train" / "model").exists()
    assert_no_ray_left(run.proc.pid)


def test_a_stale_lock_is_taken_over_and_a_live_one_names_its_holder(tmp_path, capsys):
    from rcs_ray.storage.lock import RunLock

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".rcs-ray.lock").write_text(
        json.dumps(
            {"host": os.uname().nodename, "pid": dead.pid, "since": "earlier", "command": "rcs-ray run old.yaml"}
        )
    )
    with RunLock(str(tmp_path), "rcs-ray run new.yaml"):
        assert "taking over" in capsys.readouterr().out
        holder = json.loads((tmp_path / ".rcs-ray.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "rcs-ray run new.yaml"
        with pytest.raises(RcsInputError, match=rf"in use by `rcs-ray run new.yaml` .*pid {os.getpid()}"):
            RunLock(str(tmp_path), "rcs-ray sample x.yaml").acquire()
    assert not (tmp_path / ".rcs-ray.lock").exists()
    uri = (tmp_path / "bucket").as_uri()  # a URI output dir: a lock object
    with RunLock(uri, "rcs-ray run"):
        assert (tmp_path / "bucket" / ".rcs-ray.lock").exists()
        with pytest.raises(RcsInputError, match="in use by"):
            RunLock(uri, "rcs-ray run").acquire()


@pytest.mark.parametrize("role", ["policy", "reference", "reward model"])
def test_a_truncated_checkpoint_in_each_role_is_one_line(tiny_world, tmp_path, role):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_world.reward_model if role == "reward model" else tiny_world.policy, broken)
    with open(broken / "model.safetensors", "r+b") as fh:
        fh.truncate(1000)
    out = tmp_path / "out"
    if role == "policy":
        args = ["sample", K2, f"output_dir={out}", f"policy.path={broken}"]
    elif role == "reference":
        args = ["train", K2, f"output_dir={out}", f"--reference={broken}"]
    else:
        args = [
            "sample",
            K2,
            f"output_dir={out}",
            "objectives.1.kind=multi_head",
            f"objectives.1.model={broken}",
            "objectives.1.function=null",
            "objectives.1.head=1",
        ]
    proc = subprocess.run(
        [sys.executable, "-m", "rcs_ray", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{broken}/model.safetensors is not a readable checkpoint" in errors[0]
    assert not out.exists() or os.listdir(out) == []


def test_orphaned_checkpoints_are_removed(tmp_path):
    from rcs_ray.train.launch import SNAPSHOT, remove_orphan_checkpoints

    run = tmp_path / "checkpoints" / "t-stage1"
    for name in ("checkpoint_2026-01-01_00-00-01", "checkpoint_2026-01-01_00-00-02"):
        (run / name).mkdir(parents=True)
        (run / name / "state.pt").write_text("x")
    (run / SNAPSHOT).write_text(
        json.dumps({"checkpoint_results": [{"checkpoint_dir_name": "checkpoint_2026-01-01_00-00-01"}]})
    )
    assert remove_orphan_checkpoints(str(tmp_path), "t-stage1") == ["checkpoint_2026-01-01_00-00-02"]
    assert sorted(os.listdir(run)) == ["checkpoint_2026-01-01_00-00-01", SNAPSHOT]


def test_suspicious_training_data_is_counted_and_can_be_refused():
    import pyarrow as pa

    from rcs_ray.config import TrainConfig
    from rcs_ray.data.pairs import PairSet
    from rcs_ray.train.trainer import data_checks

    rows = [
        {"prompt_id": "a", "prompt": "p", "chosen": "x", "rejected": "y"},
        {"prompt_id": "a", "prompt": "p", "chosen": "z", "rejected": "z"},  # a second pair of "a": fine
        {"prompt_id": "b", "prompt": "q", "chosen": "x", "rejected": "y"},
        {"prompt_id": "a", "prompt": "p", "chosen": "x", "rejected": "y"},
    ]  # the first pair again
    features = pa.table({"chosen_input_ids": [[1] * 8, [1] * 3, [1] * 8, [1] * 3], "rejected_input_ids": [[1] * 2] * 4})
    checks = data_checks(PairSet(rows=rows, source="p.parquet"), features, TrainConfig(max_length=8))
    assert checks == {"duplicate_pairs": 1, "identical_pairs": 1, "at_max_length": 2, "at_max_length_share": 0.5}
    features = pa.table({"chosen_input_ids": [[1] * 8, [1] * 3, [1] * 8, [1] * 8], "rejected_input_ids": [[1] * 2] * 4})
    with pytest.raises(
        RcsInputError,
        match="1 repeated pairs .same prompt id, chosen and rejected.; 1 pairs with "
        "chosen == rejected.*75% of the "
        "pairs reach train.max_length=8",
    ):
        data_checks(
            PairSet(rows=rows, source="p.parquet"), features, TrainConfig(max_length=8, on_suspicious_data="error")
        )
