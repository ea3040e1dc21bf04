"""benchmarks/workflow_sim.py's run, built without running it: ``--k 3`` (every committed report) and ``--k 2`` (the
suite's ``--smoke`` run, tests/bench) give K objectives, one simulated reward model and one stage each, and the report
says which K ran."""

import pytest

from tests.bench_scripts import import_scripts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def scripts():
    """(workflow_sim, workflow_sim_report) imported as the script imports its helpers: benchmarks/ on sys.path."""
    workflow_sim, workflow_sim_report = import_scripts("workflow_sim", "workflow_sim_report")
    import rcs_ray.config  # noqa: F401 - before register(): its OBJECTIVE_KINDS is the package's own kinds
    from benchmarks.sim_rm import KIND, register
    from rcs_ray import registry

    register()  # the sim_rm kind the config's objectives name, for this module's tests only
    yield workflow_sim, workflow_sim_report
    registry.REWARD_SOURCES.pop(KIND, None)


def built(workflow_sim, tmp_path, *argv):
    args = workflow_sim.parse_args(["--out", str(tmp_path), *argv])
    return args, workflow_sim.make_config(str(tmp_path), args)


@pytest.mark.parametrize("argv, k", [([], 3), (["--k", "2"], 2), (["--smoke"], 2)])
def test_k_objectives_each_with_its_model_and_stage(scripts, tmp_path, argv, k):
    workflow_sim, _ = scripts
    args, cfg = built(workflow_sim, tmp_path, *argv)
    names = ["a", "b", "c"][:k]
    assert args.k == k and workflow_sim.settings(args)["k"] == k
    assert [o.name for o in cfg.objectives] == names
    assert [o.model for o in cfg.objectives] == [str(tmp_path / "models" / f"rm_{n}") for n in names]
    assert [s.objective for s in cfg.stages] == names
    assert [s.sample for s in cfg.stages] == [False] + [True] * (k - 1)  # stage 1 trains on its data as it is
    assert all(s.data.path == str(tmp_path / f"{n}.jsonl") for s, n in zip(cfg.stages, names))


def test_the_report_names_the_k_that_ran(scripts):
    _, report = scripts
    _objectives, _later = report._objectives, report._later
    assert _objectives(2) == "K = 2 (objectives a, b; one simulated reward model each)"
    assert _objectives(3) == "K = 3 (objectives a, b, c; one simulated reward model each)"
    assert (_later(2), _later(3)) == ("stage 2", "stages 2 and 3")
