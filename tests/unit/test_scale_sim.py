"""The custom-engine extension point (``sampling.engine: package.module:ClassName``) and the simulated engine and
rewards of the scale simulation (benchmarks/sim.py), without Ray."""

import time

import pytest

from benchmarks import sim
from rcs_ray import rc
from rcs_ray.config import ModelConfig, SamplingConfig
from rcs_ray.data.pairs import group_table
from rcs_ray.errors import RcsInputError
from rcs_ray.rc import SAMPLED
from rcs_ray.sampling.engines import make_engine
from rcs_ray.sampling.seeds import sample_seed

pytestmark = pytest.mark.unit

SIM = "benchmarks.sim:SimEngine"


def sim_engine(monkeypatch, max_tokens=32, tokens_per_s=1e6):
    monkeypatch.setenv("RCS_SIM_TOKENS_PER_S", str(tokens_per_s))
    monkeypatch.delenv("RCS_SIM_LOG_DIR", raising=False)
    return make_engine(ModelConfig(path="unused"), SamplingConfig(engine=SIM, max_tokens=max_tokens))


def test_dotted_path_loads_a_custom_engine(monkeypatch):
    engine = sim_engine(monkeypatch)
    assert isinstance(engine, sim.SimEngine) and engine.max_model_len > 0


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("sglang", "not one of"),  # not a built-in, not a dotted path
        ("benchmarks.sim", "not one of"),  # no ':ClassName'
        ("benchmarks.sim:Sim Engine", "not one of"),
        ("rcs_ray.no_such_module:Engine", "cannot import module"),
        ("benchmarks.sim:NoSuchEngine", "has no attribute"),
        ("benchmarks.sim:reward_a", "is not a class"),
    ],
)
def test_bad_engine_path_is_an_input_error(name, fragment):
    with pytest.raises(RcsInputError, match=fragment) as err:
        make_engine(ModelConfig(path="unused"), SamplingConfig(engine=name))
    assert "sampling.engine" in str(err.value)


def test_sim_engine_is_deterministic_by_seed_and_costs_tokens_over_rate(monkeypatch):
    engine = sim_engine(monkeypatch, max_tokens=40, tokens_per_s=20000)
    start = time.perf_counter()
    out = engine.generate([[1, 2], [3, 4]], [[1, 2, 3], [4]])
    elapsed = time.perf_counter() - start
    assert [len(g) for g in out] == [3, 1]
    tokens = sum(c.num_tokens for g in out for c in g)
    assert elapsed >= tokens / 20000 * 0.9
    for c in (c for g in out for c in g):
        assert 15 <= c.num_tokens <= 40 and sim.num_tokens(c.text) == c.num_tokens
        assert c.finished == (c.num_tokens < 40)
    again = engine.generate([[5, 6]], [[2]])[0][0]  # the same seed, another batch: the same sample
    assert again == out[0][1]
    assert len({c.text for g in out for c in g}) == 4


def test_sim_rewards_are_deterministic_and_conflicting():
    texts = [f"sim-{i:010d} lorem lorem" for i in range(400)]
    a = [sim.reward_a("p", t) for t in texts]
    b = [sim.reward_b("p", t) for t in texts]
    assert a == [sim.reward_a("q", t) for t in texts]  # a function of the response
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b)) / len(a)
    assert cov < -0.5  # conflicting objectives: some prompts fail RC


def test_generate_stage_runs_the_sim_engine(monkeypatch):
    from rcs_ray.sampling.stages import GenerateStage

    monkeypatch.setenv("RCS_SIM_TOKENS_PER_S", "1e6")
    sampling = SamplingConfig(engine=SIM, n=4, max_tokens=16)
    stage = GenerateStage(ModelConfig(path="unused"), sampling, n_target=4)
    plain = group_table(
        [{"prompt_id": "p0", "prompt": "hello there", "original_chosen": "good", "original_rejected": "bad"}],
        chat=False,
    )
    chat = group_table([{"prompt_id": "p1", "prompt": [{"role": "user", "content": "a chat prompt"}]}], chat=True)
    rows = stage.generate_batch(plain).to_pylist() + stage.generate_batch(chat).to_pylist()
    assert [r["sources"].count(SAMPLED) for r in rows] == [4, 4]
    assert len(rows[0]["candidates"]) == 6 and rows[0]["candidates"][:2] == ["good", "bad"]
    seeds = [sample_seed(0, "p1", i) for i in range(4)]
    assert rows[1]["candidates"] == [stage.engine.sample(s).text for s in seeds]
    assert rows[0]["generated_tokens"] == sum(sim.num_tokens(c) for c in rows[0]["candidates"][2:])
    rewards = [[sim.reward_a("", c), sim.reward_b("", c)] for c in rows[0]["candidates"]]
    pair = rc.select_pair(rewards, 1, [0, 1])
    assert pair is None or rc.is_consistent(rewards[pair[0]], rewards[pair[1]])


def test_config_accepts_a_custom_engine_path_and_rejects_other_names(tmp_path):
    from rcs_ray.config import load_config

    (tmp_path / "c.yaml").write_text('{"objectives": [{"name": "h", "function": "m:f"}]}')
    assert load_config(str(tmp_path / "c.yaml"), [f"sampling.engine={SIM}"]).sampling.engine == SIM
    with pytest.raises(RcsInputError, match="sampling.engine"):
        load_config(str(tmp_path / "c.yaml"), ["sampling.engine=tgi"])
