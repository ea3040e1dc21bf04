"""Where a run's files live: one object answers for every path of ``output_dir``, so no caller builds one by hand.

::

    <output_dir>/
        analysis/stage<k>_<objective>/    RC report of the stage's dataset (the demo)
        eval/                             eval.json, eval.md, eval.png
        stage<k>/
            manifest.json                 the workflow's record of the stage's steps
            sampling/                     pairs.parquet, failed.parquet, stats.json, candidates.parquet
            train/                        model/, adapter/ (LoRA), metrics.jsonl, train_summary.json,
                                          features.parquet, features.json, run.json, checkpoints/<run>/
            iter<i>/                      iterative RCS (stages.N.iterations > 1, :mod:`rcs_ray.iterations`):
                prompts.jsonl             iteration i's slice of the prompts
                sampling/, train/         its sampling and (iterations before the last) training; the last
                                          iteration trains into the stage's train/

Every directory may be a URI (``s3://...``); paths are joined with :func:`rcs_ray.storage.join`. Stages are
0-based in code and named 1-based on disk (``stage1`` is stage 0). A step given its own ``--out`` directory uses
:class:`SamplingFiles` / :class:`TrainFiles` of that directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from rcs_ray.storage import join

PAIRS_FILE = "pairs.parquet"
FAILED_FILE = "failed.parquet"
STATS_FILE = "stats.json"
CANDIDATES_FILE = "candidates.parquet"
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"  # LoRA runs: the trained adapter (model/ is it merged into the base)
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
FEATURES_FILE = "features.parquet"
FEATURES_KEY = "features.json"
RUN_FILE = "run.json"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class SamplingFiles:
    """The outputs of one sampling step in ``dir``."""

    dir: str

    @property
    def pairs(self) -> str:
        return join(self.dir, PAIRS_FILE)

    @property
    def failed(self) -> str:
        return join(self.dir, FAILED_FILE)

    @property
    def stats(self) -> str:
        return join(self.dir, STATS_FILE)

    @property
    def candidates(self) -> str:
        return join(self.dir, CANDIDATES_FILE)

    NAMES = (PAIRS_FILE, FAILED_FILE, STATS_FILE, CANDIDATES_FILE)


@dataclass(frozen=True)
class TrainFiles:
    """The outputs of one training step in ``dir``."""

    dir: str

    @property
    def model(self) -> str:
        return join(self.dir, MODEL_DIR)

    @property
    def adapter(self) -> str:
        return join(self.dir, ADAPTER_DIR)

    @property
    def metrics(self) -> str:
        return join(self.dir, METRICS_FILE)

    @property
    def summary(self) -> str:
        return join(self.dir, SUMMARY_FILE)

    @property
    def checkpoints(self) -> str:
        return join(self.dir, CHECKPOINTS_DIR)

    def run_checkpoints(self, run_name: str) -> str:
        """Where Ray Train keeps the checkpoints of run ``run_name`` (its ``storage_path`` / ``name``)."""
        return join(self.dir, CHECKPOINTS_DIR, run_name)

    OUTPUTS = (MODEL_DIR, ADAPTER_DIR, METRICS_FILE, SUMMARY_FILE)  # published when training ends
    INPUTS = (FEATURES_FILE, FEATURES_KEY, RUN_FILE)  # published before training (a rerun elsewhere reuses them)


@dataclass(frozen=True)
class StageDir:
    """Stage ``index`` (0-based) of a run."""

    dir: str
    index: int

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def manifest(self) -> str:
        return join(self.dir, MANIFEST_FILE)

    @property
    def sampling(self) -> SamplingFiles:
        return SamplingFiles(join(self.dir, "sampling"))

    @property
    def train(self) -> TrainFiles:
        return TrainFiles(join(self.dir, "train"))

    def iteration(self, number: int) -> "IterationDir":
        """Iteration ``number`` (1-based) of an iterative stage."""
        return IterationDir(join(self.dir, f"iter{number}"), number)


@dataclass(frozen=True)
class IterationDir:
    """Iteration ``number`` (1-based) of an iterative stage: its prompt slice, sampling and training."""

    dir: str
    number: int

    @property
    def prompts(self) -> str:
        return join(self.dir, "prompts.jsonl")

    @property
    def sampling(self) -> SamplingFiles:
        return SamplingFiles(join(self.dir, "sampling"))

    @property
    def train(self) -> TrainFiles:
        return TrainFiles(join(self.dir, "train"))


@dataclass(frozen=True)
class RunLayout:
    """Every path under a run's ``output_dir``."""

    output_dir: str

    def stage(self, index: int) -> StageDir:
        return StageDir(join(self.output_dir, f"stage{index + 1}"), index)

    @property
    def eval_dir(self) -> str:
        return join(self.output_dir, "eval")

    @property
    def vanilla_dir(self) -> str:
        """The demo's vanilla twin run: the last stage trained on its dataset's own pairs."""
        return join(self.output_dir, "vanilla")

    def analysis_dir(self, index: int, objective: str) -> str:
        return join(self.output_dir, "analysis", f"stage{index + 1}_{objective}")
