"""Models kept while they are used (rcs_ray/sampling/hosts.py): a stage's engines serve all its adaptive rounds, a
reward model every policy an evaluation scores, with the same outputs as models loaded for every pass."""

import pytest

from rcs_ray.errors import RcsInputError
from rcs_ray.sampling import host_actors, hosts
from tests.ray.sampling_helpers import read, tiny_cfg

ADAPTIVE = ("sampling.n=2", "sampling.adaptive.enabled=true", "sampling.adaptive.n_max=4", "stages.1.rc.margin=0.0")


def _refuse(**_):
    raise RcsInputError("m: the model has no weights")


def _pool(kind, factory, demand):
    args = {"num_cpus": demand["CPU"]}
    return hosts.HostPool(kind, f"{kind}-test", host_actors.ScoreStageHost, factory, {}, 1, lambda: dict(args), demand)


def test_kept_models_serve_every_round_and_give_the_same_pairs(tiny_world, ray_session, tmp_path):
    from rcs_ray.sampling import run

    kept = run(tiny_cfg(tmp_path / "kept", *ADAPTIVE), progress=False)
    fresh = run(tiny_cfg(tmp_path / "fresh", *ADAPTIVE, "ray.keep_models=false"), progress=False)
    first, second = kept.stats["rounds"]
    assert first["hosts_started"] == {"generate": 1, "score:rule[harmless,helpful]": 1}
    assert second["hosts_started"] == {}  # round 2 (n = 4) ran on the models round 1 loaded
    assert [r["hosts_started"] for r in fresh.stats["rounds"]] == [first["hosts_started"]] * 2
    assert second["prompts"] > 0 and second["n"] == 4
    for name in ("pairs", "failed"):
        with open(getattr(kept, name), "rb") as a, open(getattr(fresh, name), "rb") as b:
            assert a.read() == b.read(), name
    assert hosts.kept() == []  # released when the command's scope ended


def test_an_evaluation_loads_its_reward_models_once_for_every_policy(tiny_world, ray_session, tmp_path):
    from rcs_ray.evaluate import evaluate
    from rcs_ray.user_paths import resolve_model_dir

    cfg = tiny_cfg(tmp_path, "eval.prompts.limit=8", "eval.n=2")
    policy = resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld)
    before = hosts.started()
    result = evaluate(cfg, {"a": policy, "b": policy}, reference="a")
    after = hosts.started()
    loaded = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert loaded == {"generate": 2, "score:rule[harmless,helpful]": 1}  # one engine per policy, the rules once
    assert result.metrics["a"]["mean"] == result.metrics["b"]["mean"]  # same policy and seeds: the same samples
    assert hosts.kept() == []


def test_kept_hosts_give_way_to_a_trainer_that_would_not_fit(ray_session):
    # the session's Ray has 2 CPUs; a host holding one leaves room for one worker, not two
    with hosts.scope():
        hosts.ready(hosts.hosts(_pool("score:x", dict, {"CPU": 1.0})))
        assert not hosts.make_room({"CPU": 1.0}) and hosts.kept() == ["score:x"]
        assert hosts.make_room({"CPU": 2.0}) and hosts.kept() == []


def test_a_model_that_fails_to_load_raises_its_own_error_and_is_not_kept(ray_session):
    with hosts.scope():
        handles = hosts.hosts(_pool("score:y", _refuse, {"CPU": 0.0}))
        with pytest.raises(RcsInputError, match="the model has no weights"):
            hosts.ready(handles)
        assert hosts.kept() == []


def test_models_that_cannot_sit_side_by_side_run_one_after_another_with_the_same_pairs(default_run, tmp_path):
    from rcs_ray.sampling import run

    cfg, result = default_run
    # two engines of one CPU each and the rule scorer need 2.25 CPUs: the session's Ray has 2
    other = run(tiny_cfg(tmp_path, "sampling.num_actors=2"), progress=False)
    assert read(other.pairs) == read(result.pairs) and read(other.failed) == read(result.failed)
    assert hosts.kept() == []


def test_a_model_that_cannot_fit_a_local_ray_alone_says_so(tiny_world, ray_session, tmp_path):
    from rcs_ray.sampling import run

    with pytest.raises(RcsInputError, match=r"generate: 3 model host\(s\) need 3 CPU \(the cluster has 2\)"):
        run(tiny_cfg(tmp_path, "sampling.num_actors=3"), progress=False)
    assert hosts.kept() == []
