"""Models kept while they are used (rcs_ray/sampling/hosts.py): a stage's engines serve all its adaptive rounds, a
reward model every policy an evaluation scores, with the same outputs as models loaded for every pass."""

import os
import time

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


def _sharper_copy(policy: str, out: str) -> str:
    """The policy with its output layer's logits tripled: another model of the same family, sampling otherwise."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)
    model.save_pretrained(out)
    for name in os.listdir(policy):
        if "token" in name or name.endswith((".jinja", ".txt")):
            shutil.copy(os.path.join(policy, name), out)
    return out


def test_an_evaluation_loads_its_reward_models_once_and_the_next_policy_in_the_same_engine(
    tiny_world, ray_session, tmp_path
):
    from rcs_ray.evaluate import evaluate
    from rcs_ray.user_paths import resolve_model_dir

    cfg = tiny_cfg(tmp_path, "eval.prompts.limit=8", "eval.n=2")
    policy = resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld)
    other = _sharper_copy(policy, str(tmp_path / "sharper"))
    before, reloads = hosts.started(), hosts.reloaded()
    result = evaluate(cfg, {"a": policy, "b": other, "a2": policy}, reference="a", out_dir=str(tmp_path / "kept"))
    after = hosts.started()
    loaded = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert loaded == {"generate": 1, "score:rule[harmless,helpful]": 1}  # one engine process for the 3 policies
    assert hosts.reloaded().get("generate", 0) - reloads.get("generate", 0) == 2  # b, then a again, in place
    assert hosts.kept() == []
    fresh_cfg = tiny_cfg(tmp_path, "eval.prompts.limit=8", "eval.n=2", "ray.keep_models=false")
    fresh = evaluate(fresh_cfg, {"b": other}, out_dir=str(tmp_path / "fresh"))  # b in an engine of its own
    means = {name: result.metrics[name]["mean"] for name in ("a", "b", "a2")}
    assert means["b"] == fresh.metrics["b"]["mean"]  # the engine that ran a gives b's own samples
    assert means["a2"] == means["a"] and means["b"] != means["a"]  # back to a's; b samples otherwise


class _Named:
    """A stand-in stage: answers every batch with the name it was loaded with."""

    def __init__(self, name):
        self.name = name

    async def host_call(self, batch):
        return self.name


def _named(name):
    return hosts.HostPool(
        "generate", f"named-{name}", host_actors.GenerateStageHost, _Named, {"name": name}, 1, dict, {}, family="t"
    )


def test_a_host_restarted_after_loading_in_place_loads_the_passs_model_again(ray_session):
    import ray

    with hosts.scope():
        first = hosts.hosts(_named("a"))
        hosts.ready(first)
        second = hosts.hosts(_named("b"))  # the same host, told to load b
        hosts.ready(second)
        assert second == first and hosts.kept() == ["generate"]
        host, b = second[0], ("named-b", _Named, {"name": "b"})
        assert ray.get(host.call.remote(None, model=b)) == "b"
        pid = ray.get(host.ready.remote())
        ray.kill(host, no_restart=False)  # Ray restarts it with its constructor's arguments: model a
        deadline = time.time() + 60
        while ray.get(host.ready.remote()) == pid and time.time() < deadline:
            time.sleep(0.2)
        assert ray.get(host.call.remote(None)) == "a"
        assert ray.get(host.call.remote(None, model=b)) == "b"  # what a pass's caller sends: b loads again
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
