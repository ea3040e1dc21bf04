"""What training computes from its pairs, without Ray: the vocabulary and finite log-prob checks, MODPO / SPO loss
inputs and SPO's policy chain, the DeepSpeed config builder, the seeded batch schedule, and the tokenize / reference
log-prob stages called directly (with the feature cache key)."""

import os

import numpy as np
import pytest

from rcs_ray.config import TrainConfig, load_config
from rcs_ray.data.pairs import PairSet
from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.loading import check_vocab
from rcs_ray.train.batches import batch_rows, schedule
from rcs_ray.train.deepspeed_engine import build_ds_config
from rcs_ray.train.margins import LossContext, implicit_margins, modpo_inputs, spo_inputs
from rcs_ray.train.ref_stages import check_finite_logps
from tests.fixtures_data import scored_pair_rows

pytestmark = pytest.mark.unit


def one_line(fn, *match):
    with pytest.raises(RcsInputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(m in msg for m in match), msg
    return msg


# ----------------------------------------------------------------------------------------------- checks
class FakeTokenizer:
    name_or_path = "tok"

    def __len__(self):
        return 1000


def test_vocab_check():
    check_vocab(FakeTokenizer(), 1000, "m")
    check_vocab(FakeTokenizer(), 1024, "m")  # padded embedding: fine
    one_line(lambda: check_vocab(FakeTokenizer(), 900, "m"), "1000 tokens", "vocab_size 900")


def test_finite_logps_check():
    check_finite_logps(np.array([-1.0, -2.0]), "ref_chosen_logps", "m")
    one_line(
        lambda: check_finite_logps(np.array([-1.0, np.nan, np.inf]), "ref_chosen_logps", "/ref"),
        "/ref",
        "row 1",
        "2 non-finite of 3",
    )


# ----------------------------------------------------------------------------------------------- margins
def pairs3():
    return PairSet(
        rows=scored_pair_rows(2), reward_names=["harmless", "helpful", "concise"], target="helpful", source="x"
    )


def ctx(pairs, stage=1, earlier=("harmless",), **train):
    return LossContext(
        pairs=pairs,
        train=TrainConfig(**train),
        stage=stage,
        objective_names=["harmless", "helpful", "concise"],
        aligned_before=list(earlier),
    )


def test_modpo_margins_are_the_earlier_stages_objectives_only():
    # pairs of stage 2 (target helpful) carry harmless, helpful and concise rewards: only harmless is a margin
    inputs = modpo_inputs(ctx(pairs3()))
    mc, mr = inputs.margins
    assert inputs.margin_names == ["harmless"] and inputs.params["weights"] == pytest.approx([0.5, 0.5])
    assert mc.tolist() == [[1.0]] * 2 and mr.tolist() == [[0.0]] * 2
    assert modpo_inputs(ctx(pairs3(), modpo_weights=[0.2, 0.7, 0.1])).params["weights"] == [0.7, 0.2]
    # stage 1: no earlier objective, no margin (MODPO is DPO there), even on pairs that carry later objectives
    first = modpo_inputs(ctx(pairs3(), stage=0, earlier=()))
    assert first.margin_names == [] and first.margins[0].shape == (2, 0) and first.params["weights"] == [1.0]
    # and a dataset without scores at all trains at stage 1
    unscored = modpo_inputs(ctx(PairSet(rows=scored_pair_rows(2), target="helpful", source="d"), stage=0, earlier=()))
    assert unscored.margin_names == []


def test_modpo_inputs_errors():
    p = pairs3()
    p.target = None
    one_line(lambda: modpo_inputs(ctx(p)), "target")
    c = ctx(pairs3(), modpo_weights=[0.5, 0.5])
    c.objective_names = ["concise", "helpful"]
    one_line(lambda: modpo_inputs(c), "no weight", "harmless")
    one_line(lambda: modpo_inputs(ctx(pairs3(), modpo_weights=[1, 0, 1])), "weight > 0")
    bare = PairSet(
        rows=[{k: v for k, v in r.items() if "rewards" not in k} for r in scored_pair_rows(2)],
        target="helpful",
        source="d2.jsonl",
    )
    one_line(lambda: modpo_inputs(ctx(bare)), "d2.jsonl", "earlier objectives ['harmless']", "sample: true")


def test_spo_inputs_recorded_and_implicit():
    inputs = spo_inputs(ctx(pairs3(), spo_reward_source="recorded"))
    mc, mr = inputs.margins
    assert mc.tolist() == [[1.0], [1.0]] and mr.tolist() == [[0.0], [0.0]] and inputs.params == {"alphas": [1.0]}
    one_line(
        lambda: spo_inputs(ctx(PairSet(rows=scored_pair_rows(1), source="s"), spo_reward_source="recorded")),
        "spo",
        "rewards",
    )
    one_line(lambda: spo_inputs(ctx(pairs3(), spo_alphas=[1.0, 2.0])), "spo_alphas", "1 earlier stage")
    assert spo_inputs(ctx(pairs3(), stage=0)).params == {}  # stage 1: SPO is DPO
    # r_j = beta * (log pi_j - log pi_{j-1}); chain of 3 models -> 2 columns
    mc, mr = implicit_margins(
        [np.array([-10.0, -4.0]), np.array([-8.0, -5.0]), np.array([-7.0, -5.0])],
        [np.array([-9.0, -3.0]), np.array([-9.0, -3.0]), np.array([-10.0, -2.0])],
        0.5,
    )
    assert mc.tolist() == [[1.0, 0.5], [-0.5, 0.0]] and mr.tolist() == [[0.0, -0.5], [0.0, 0.5]]
    # implicit: the loss asks the reference pass for the chain's log-probs, then turns them into margins, each
    # earlier stage's reward scaled by that stage's own beta (0.5 and 2.0 here; this stage's beta is 0.1)
    c = ctx(pairs3(), stage=2, earlier=("harmless", "helpful"), beta=0.1)
    c.policy_chain, c.earlier_betas = (lambda: ["pi0", "pi1", "pi2"]), [0.5, 2.0]
    inputs = spo_inputs(c)
    assert inputs.models == {"spo0": "pi0", "spo1": "pi1", "spo2": "pi2"} and inputs.margins is None
    lp = {
        "spo0": (np.array([-10.0]), np.array([-9.0])),
        "spo1": (np.array([-8.0]), np.array([-9.0])),
        "spo2": (np.array([-7.0]), np.array([-10.0])),
    }
    mc, mr = inputs.from_logps(lp)
    assert mc.tolist() == [[0.5 * 2.0, 2.0 * 1.0]] and mr.tolist() == [[0.0, 2.0 * -1.0]]


# ----------------------------------------------------------------------------------------------- DeepSpeed config
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_ds_config_zero_stages(stage):
    cfg = build_ds_config(TrainConfig(zero_stage=stage, batch_size=4, gradient_accumulation_steps=3), world_size=2)
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["train_batch_size"] == 24 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 3 and cfg["gradient_clipping"] == 1.0
    assert ("stage3_gather_16bit_weights_on_model_save" in cfg["zero_optimization"]) == (stage == 3)
    assert "bf16" not in cfg and "fp16" not in cfg and "optimizer" not in cfg and "scheduler" not in cfg


def test_ds_config_precision_offload_warmup():
    assert build_ds_config(TrainConfig(precision="bf16"), 1)["bf16"] == {"enabled": True}
    assert build_ds_config(TrainConfig(precision="fp16"), 1)["fp16"]["enabled"] is True
    cfg = build_ds_config(TrainConfig(offload_optimizer=True, learning_rate=1e-4, warmup_steps=5, max_grad_norm=0.0), 8)
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["lr"] == 1e-4
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 5 and cfg["gradient_clipping"] == 0.0


def test_config_validation_of_new_train_keys():
    one_line(lambda: load_config(None, ["train.offload_optimizer=true", "train.zero_stage=0"]), "zero_stage >= 1")
    one_line(lambda: load_config(None, ["train.spo_reward_source=x"]), "train.spo_reward_source")
    one_line(lambda: load_config(None, ["train.spo_alphas=[-1]"]), "train.spo_alphas")
    one_line(lambda: load_config(None, ["train.save_steps=0"]), "train.save_steps")


# ----------------------------------------------------------------------------------------------- batch schedule
def test_schedule_and_seeded_batches():
    t = TrainConfig(batch_size=2, gradient_accumulation_steps=2, seed=3, max_steps=None, num_epochs=2)
    assert schedule(17, t, 2) == (2, 4)  # global batch 8: 2 steps per epoch, tail of 1 dropped
    assert schedule(17, TrainConfig(batch_size=2, max_steps=7), 2) == (4, 7)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        schedule(7, t, 2)
    step0 = [batch_rows(0, a, r, 17, t, 2) for r in range(2) for a in range(2)]
    flat = np.concatenate(step0)
    assert len(set(flat.tolist())) == 8  # workers and micro steps see disjoint rows
    step1 = np.concatenate([batch_rows(1, a, r, 17, t, 2) for r in range(2) for a in range(2)])
    assert not set(flat.tolist()) & set(step1.tolist())
    assert np.array_equal(batch_rows(0, 1, 1, 17, t, 2), step0[3])  # deterministic
    epoch1 = np.concatenate([batch_rows(2, a, r, 17, t, 2) for r in range(2) for a in range(2)])
    assert not np.array_equal(epoch1, flat)  # a new order each epoch


# ----------------------------------------------------------------------------------------------- stages, no Ray
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rcs_ray.tinyworld.build import build_tokenizer

    path = tmp_path_factory.mktemp("tiny") / "m"
    tok = build_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), tok


def test_tokenize_and_reference_stages_called_directly(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.modeling.logprobs import sequence_logps, tokenize_example
    from rcs_ray.train.ref_stages import ReferenceLogps

    path, tok = tiny_model
    prs = PairSet(
        rows=[
            {"prompt": "ask cooking how briefly", "chosen": "recipe oven", "rejected": "rumor"},
            {"prompt": "ask cooking how clearly", "chosen": "flavor", "rejected": "mock lie"},
        ]
    )
    stage = ReferenceLogps(
        path,
        pad_token_id=tok.pad_token_id,
        micro_batch=1,
        tokenize=dict(tokenizer=path, max_length=32, chat_template=True),
    )
    out = stage(prs.table())
    assert out.column_names == [
        "index",
        "chosen_input_ids",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_labels",
        "ref_chosen_logps",
        "ref_rejected_logps",
    ]
    # plain prompts went through the chat template (as the policy saw them): the template's BOS leads
    chat = [{"role": "user", "content": "ask cooking how clearly"}]
    expected = tokenize_example(tok, chat, "mock lie", 32)
    assert out.column("rejected_input_ids")[1].as_py() == expected["input_ids"]
    assert expected["input_ids"][0] == tok.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        ids = torch.tensor([expected["input_ids"]])
        want = sequence_logps(model(input_ids=ids).logits, torch.tensor([expected["labels"]])).item()
    assert out.column("ref_rejected_logps")[1].as_py() == pytest.approx(want, abs=1e-5)


def test_feature_cache_key_follows_content(tiny_model):
    from rcs_ray.train.refs import cache_key

    path, _ = tiny_model
    prs = PairSet(rows=scored_pair_rows(2))
    key = cache_key(prs.table(), {"ref": path}, {"max_length": 32})
    assert key == cache_key(prs.table(), {"ref": path}, {"max_length": 32})
    assert key != cache_key(prs.table(), {"ref": path}, {"max_length": 33})
    prs.rows[1]["chosen"] = "other"
    assert key != cache_key(prs.table(), {"ref": path}, {"max_length": 32})


# ----------------------------------------------------------------------------------------------- SPO's policy chain
def test_spo_policy_chain(tmp_path):
    from rcs_ray.train.features import policy_chain

    a, b = str(tmp_path / "pi0"), str(tmp_path / "pi1")
    os.makedirs(a), os.makedirs(b)
    k3 = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny", "k3.yaml")
    cfg = load_config(k3, [f"output_dir={tmp_path}", f"policy.path={a}"])
    assert policy_chain(cfg, 1, b) == [a, b]
    one_line(lambda: policy_chain(cfg, 1, a), "pi_0 and pi_1 are the same model")
    one_line(lambda: policy_chain(cfg, 2, b), "stage 1's implicit reward needs", "stage1/train/model")
    cfg = load_config(k3, [f"output_dir={tmp_path}", f"train.spo_policies=[{a},{b}]"])
    one_line(lambda: policy_chain(cfg, 1, a), "must be the policy stage 2 starts from")
    one_line(lambda: policy_chain(cfg, 2, b), "needs 3 models")
