"""Padding that can never be mistaken for text (issue 23, item 2), on tiny replicas without Ray.

Each reward family gets a variant whose EOS ends EVERY chat turn (a Llama-3-style template, ``<|eot_id|>`` = eos) and
which has NO pad token, so ``pad = eos`` would make every turn end look like padding. A batch of conversations of
different lengths scored together must equal each conversation's own reading: the head at the last token of the
unpadded sequence, computed here by hand from the backbone. The padding written into the batch must be an id that
occurs in no row and lies inside the embedding. Log-prob passes (reference / implicit / judge, and the trainer's
collate) must give each sequence's per-token log-probs exactly as it alone gives them.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from rcs_ray.config import ObjectiveConfig
from rcs_ray.sampling.job import ScorerSettings
from rcs_ray.sampling.scorers import ClassifierScorer

pytestmark = [pytest.mark.slow]

PROMPTS = [
    "how to bake bread",
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi how are you"},
        {"role": "user", "content": "pick a lock please"},
    ],
    [{"role": "system", "content": "be kind"}, {"role": "user", "content": "write a story about the river"}],
]
RESPONSES = ["sure here is help", "no", "here is a good story about the city and the river and a tree"]
TOKENIZER_FILES = ("tokenizer", "special_tokens", "chat_template", "added_tokens", "vocab", "merges")


def messages(prompt, response):
    return ([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)) + [
        {"role": "assistant", "content": response}
    ]


def eot_variant(src: str, dst: str) -> str:
    """``src``'s weights and code with a Llama-3-style tokenizer whose EOS is ``<|eot_id|>`` and which has no pad
    token; ``config.pad_token_id`` removed, ``eos_token_id`` the eot id."""
    from tests.replicas import llama3_tokenizer

    os.makedirs(dst)
    for name in os.listdir(src):
        if not name.startswith(TOKENIZER_FILES):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    tok = llama3_tokenizer()
    tok.eos_token = "<|eot_id|>"
    assert tok.pad_token is None
    tok.save_pretrained(dst)
    with open(os.path.join(dst, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    if len(tok) > config["vocab_size"]:  # more embedding rows for the new tokenizer
        _grow_embedding(os.path.join(dst, "model.safetensors"), len(tok))
        config["vocab_size"] = len(tok)
    config.update(pad_token_id=None, eos_token_id=tok.eos_token_id)
    with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
    return dst


def _grow_embedding(weights: str, rows: int) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    torch.manual_seed(0)
    for key in [k for k in state if k.endswith("embed_tokens.weight")]:
        extra = torch.randn(rows - state[key].shape[0], state[key].shape[1]) * 0.02
        state[key] = torch.cat([state[key], extra.to(state[key].dtype)])
    save_file(state, weights, metadata={"format": "pt"})


def conversations(path):
    """Each conversation's ids (the template alone, unpadded), checked to be a case where pad = eos misleads."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.pad_token_id is None and tok.eos_token == "<|eot_id|>"
    out = []
    for p, r in zip(PROMPTS, RESPONSES):
        ids = tok.apply_chat_template(messages(p, r), return_dict=True)["input_ids"]
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) >= 2  # EOS ends every turn
        out.append(ids)
    assert len({len(x) for x in out}) == len(out)  # different lengths
    return out


def scored_with_padding_check(scorer):
    """``scorer.score`` of all conversations in one batch, and alone; asserts the padding it fed the model."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))

    handle = scorer.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        batch = scorer.score(PROMPTS, RESPONSES)
    finally:
        handle.remove()
    ((ids, mask),) = seen  # one batch, one forward
    real = set(ids[mask.bool()].tolist())
    pads = ids[~mask.bool()]
    assert pads.numel() > 0, "the batch was not padded"
    assert not set(pads.tolist()) & real, "padded with a token id that occurs in the text"
    assert int(pads.max()) < scorer.model.get_input_embeddings().num_embeddings
    alone = np.concatenate([scorer.score([p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    return batch, alone


def test_a_sequence_classifier_reads_the_last_token_not_the_last_eos(replicas, tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = eot_variant(replicas["helpful_rm"], str(tmp_path / "rm"))
    scorer = ClassifierScorer(
        [ObjectiveConfig(name="h", kind="classifier", model=path, batch_size=8)], ScorerSettings()
    )
    got, alone = scored_with_padding_check(scorer)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    want = []
    with torch.no_grad():
        for ids in conversations(path):
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            want.append(model.score(hidden).numpy())
    np.testing.assert_allclose(got, np.array(want), atol=1e-5, rtol=0)
    np.testing.assert_allclose(alone, np.array(want), atol=1e-5, rtol=0)


def test_armorm_style_code_reads_before_the_pad_not_at_the_first_turn_end(replicas, tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = eot_variant(replicas["armorm"], str(tmp_path / "armorm"))
    objs = [
        ObjectiveConfig(name=n, kind="multi_head", model=path, output=o, head=h, trust_remote_code=True, batch_size=8)
        for n, o, h in (
            ("helpful", "rewards", 0),
            ("honest", "rewards", 8),
            ("safe", "rewards", 10),
            ("gated", "score", 0),
        )
    ]
    got, alone = scored_with_padding_check(ClassifierScorer(objs, ScorerSettings(trust_remote_code=True)))
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    pattern = list(model.token_pattern)
    want = []
    with torch.no_grad():
        for ids in conversations(path):
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            rewards = model.regression_layer(hidden[-1])  # the last token's rewards
            gate = max(j for j in range(len(ids) - len(pattern) + 1) if ids[j : j + len(pattern)] == pattern)
            weights = model.gating(hidden[gate][None])[0]
            score = float((weights * (rewards @ model.reward_transform_matrix)).sum())
            want.append([float(rewards[0]), float(rewards[8]), float(rewards[10]), score])
    np.testing.assert_allclose(got, np.array(want), atol=1e-5, rtol=0)
    np.testing.assert_allclose(alone, np.array(want), atol=1e-5, rtol=0)


def test_a_safe_rlhf_score_model_reads_its_end_scores_at_the_last_token(replicas, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaModel

    path = eot_variant(replicas["cost"], str(tmp_path / "cost"))
    obj = ObjectiveConfig(name="harmless", kind="classifier", model=path, output="auto", sign=-1.0, batch_size=8)
    got, alone = scored_with_padding_check(ClassifierScorer([obj], ScorerSettings()))
    backbone = LlamaModel.from_pretrained(path).eval()
    head = load_file(os.path.join(path, "model.safetensors"))["score_head.weight"]
    with torch.no_grad():
        want = [
            [-float(head[0] @ backbone(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])]
            for ids in conversations(path)
        ]
    np.testing.assert_allclose(got, np.array(want), atol=1e-5, rtol=0)
    np.testing.assert_allclose(alone, np.array(want), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- log-prob passes
def _alone_token_logps(model, ids, labels):
    """Per-token log-probs of one unpadded sequence, by hand: log softmax(logits[t - 1])[ids[t]] where labelled."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return np.array([float(logp[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100])


def test_log_prob_passes_give_each_sequence_its_own_per_token_log_probs(replicas):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rcs_ray.modeling.logprobs import ResponseLogps, build_pair_features, collate_pairs, tokenize_example
    from rcs_ray.train.batches import pair_logps

    path = replicas["policy"]  # Llama-3 style, no pad token, <|eot_id|> ends turns
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = "<|eot_id|>"
    assert tok.pad_token_id is None
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    examples = [tokenize_example(tok, p, r, max_length=256, use_chat_template=True) for p, r in zip(PROMPTS, RESPONSES)]
    assert all(e["input_ids"].count(tok.eos_token_id) >= 2 for e in examples)
    want = [_alone_token_logps(model, e["input_ids"], e["labels"]) for e in examples]

    logps = ResponseLogps(model, tok.pad_token_id, micro_batch=8)  # one padded pass over all three
    for got, w in zip(logps.per_token(examples), want):
        np.testing.assert_allclose(got, w, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logps(examples), [w.sum() for w in want], atol=1e-4, rtol=0)

    # the trainer's collate, with the tokenizer's pad = eos (load_tokenizer's rule): padding never looks like text
    feats = [
        build_pair_features(tok, p, r, RESPONSES[0], max_length=256, use_chat_template=True)
        for p, r in zip(PROMPTS, RESPONSES)
    ]
    batch = collate_pairs(feats, pad_token_id=tok.eos_token_id)
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]]).bool()
    assert (~mask).any() and not set(ids[~mask].tolist()) & set(ids[mask].tolist())
    assert int(ids.max()) < model.get_input_embeddings().num_embeddings
    with torch.no_grad():
        chosen, _ = pair_logps(model, batch)
    np.testing.assert_allclose(chosen.detach().double().numpy(), [w.sum() for w in want], atol=1e-4, rtol=0)
