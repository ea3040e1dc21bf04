"""Sequence log-probs against a hand-computed log-softmax; tokenization labels, truncation and collation."""

import copy
import math

import pytest
import torch

from rcs_ray.modeling.logprobs import IGNORE_INDEX, build_pair_features, collate_pairs, sequence_logps, tokenize_example
from tests.wordtok import BOS, EOS, ID, PAD, WORDS, ids

pytestmark = pytest.mark.unit

# ----------------------------------------------------------------------------------------------- sequence_logps
LOGITS = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0], [5.0, -1.0, 3.0, 0.5]]])  # (1, 3, 4)
LABELS = torch.tensor([[IGNORE_INDEX, 2, 1]])  # token 0 is prompt; tokens 1, 2 are scored


def test_sequence_logps_hand_computed():
    # position 0 predicts label 2 under uniform logits: log(1/4)
    # position 1 predicts label 1: log(e^2 / (e^1 + e^2 + 1 + 1)); position 2 predicts nothing
    first = math.log(0.25)
    second = 2.0 - math.log(math.e + math.e**2 + 2.0)
    assert sequence_logps(LOGITS, LABELS).item() == pytest.approx(first + second, abs=1e-6)
    assert sequence_logps(LOGITS, LABELS, average=True).item() == pytest.approx((first + second) / 2, abs=1e-6)


def test_sequence_logps_masked_positions_do_not_matter():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])  # only position 1 -> label 1 counts
    base = sequence_logps(LOGITS, labels)
    changed = LOGITS.clone()
    changed[0, 0] = torch.tensor([9.0, -7.0, 100.0, 3.0])  # predicts an ignored label
    changed[0, 2] = torch.tensor([float("nan"), 1.0, 2.0, 3.0])  # the last position predicts nothing
    assert sequence_logps(changed, labels).item() == pytest.approx(base.item(), abs=1e-6)
    assert base.item() == pytest.approx(2.0 - math.log(math.e + math.e**2 + 2.0), abs=1e-6)


def test_sequence_logps_gradient_reaches_only_scored_positions():
    logits = LOGITS.clone().requires_grad_(True)
    sequence_logps(logits, torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])).backward()
    assert torch.all(logits.grad[0, 0] == 0) and torch.all(logits.grad[0, 2] == 0)
    assert logits.grad[0, 1, 1] > 0 and torch.all(logits.grad[0, 1, [0, 2, 3]] < 0)


def test_sequence_logps_batch_dtypes_and_custom_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    labels = torch.randint(0, 7, (3, 5))
    labels[:, :2] = -1
    labels[1, 4] = -1
    expected = torch.stack(
        [
            sum(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]] for t in range(1, 5) if labels[b, t] != -1)
            for b in range(3)
        ]
    )
    out = sequence_logps(logits, labels, ignore_index=-1)
    assert out.shape == (3,)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(sequence_logps(logits.double(), labels, ignore_index=-1), expected.double())
    half = sequence_logps(logits.bfloat16(), labels, ignore_index=-1)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=0.1, rtol=0.02)


@pytest.mark.parametrize(
    "logits, labels, match",
    [
        (torch.zeros(1, 3), LABELS, r"logits: expected a float tensor of shape \(B, T, V\)"),
        (LOGITS.long(), LABELS, r"logits: expected a float tensor"),
        (LOGITS, LABELS.float(), r"labels: expected an integer tensor"),
        (LOGITS, torch.tensor([[IGNORE_INDEX, 2]]), r"labels: shape \(1, 2\) does not match"),
        (LOGITS[:, :1], torch.tensor([[1]]), r"labels: need T >= 2"),
        (LOGITS, torch.tensor([[IGNORE_INDEX, 4, 1]]), r"labels: token id 4 at row 0, position 1 is outside \[0, 4\)"),
        (LOGITS, torch.tensor([[1, IGNORE_INDEX, IGNORE_INDEX]]), r"labels: row 0 has no labelled token"),
    ],
)
def test_sequence_logps_rejects_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        sequence_logps(logits, labels)


# ----------------------------------------------------------------------------------------------- tokenization
def test_plain_prompt_labels_only_the_response_and_eos(tok):
    out = tokenize_example(tok, "hi there", "good answer", max_length=32)
    assert out["input_ids"] == [BOS] + ids("hi there") + ids("good answer") + [EOS]
    assert out["labels"] == [IGNORE_INDEX] * 3 + ids("good answer") + [EOS]
    assert out["attention_mask"] == [1] * 6


def test_plain_response_already_ending_with_eos_gets_no_second_one(tok):
    out = tokenize_example(tok, "hi", "good </s>", max_length=32)
    assert out["input_ids"] == [BOS, ID["hi"], ID["good"], EOS]


def test_chat_prompt_uses_the_template_and_labels_the_assistant_turn(tok):
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "how are you"}]
    out = tokenize_example(tok, messages, "good answer", max_length=32)
    prompt = [BOS] + ids("<|system|> be kind <|user|> how are you <|assistant|>")
    assert out["input_ids"] == prompt + ids("good answer") + [EOS]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt) + ids("good answer") + [EOS]
    # the same turn given as a message list (TRL's conversational format), or one message
    as_list = tokenize_example(tok, messages, [{"role": "assistant", "content": "good answer"}], max_length=32)
    as_dict = tokenize_example(tok, messages, {"role": "assistant", "content": "good answer"}, max_length=32)
    assert as_list == out and as_dict == out


def test_chat_ids_match_the_whole_conversation_rendered_at_once(tok):
    messages = [{"role": "user", "content": "hi there"}]
    out = tokenize_example(tok, messages, "bad answer", max_length=32)
    whole = tok.apply_chat_template(messages + [{"role": "assistant", "content": "bad answer"}], tokenize=False)
    assert out["input_ids"] == tok(whole, add_special_tokens=False)["input_ids"]


def test_truncation_cuts_the_response_first_then_the_prompt_from_the_left(tok):
    prompt, response = "hi there how are you", "very long good answer"  # 6 prompt ids (BOS), 5 response ids
    # 8 tokens: response cut to max(8 - 6, 8 // 2) = 4 -> prompt keeps its last 4 tokens
    out = tokenize_example(tok, prompt, response, max_length=8)
    assert out["input_ids"] == ids("there how are you") + ids("very long good answer")
    assert out["labels"] == [IGNORE_INDEX] * 4 + ids("very long good answer")  # the cut response lost its EOS
    # 10 tokens: the floor 10 // 2 = 5 covers the whole response (EOS kept); the prompt keeps 5 (loses its BOS)
    out = tokenize_example(tok, prompt, response, max_length=10)
    assert out["input_ids"] == ids("hi there how are you") + ids("very long good answer") + [EOS]
    # a short response is never cut; the prompt gives way
    out = tokenize_example(tok, prompt, "good", max_length=4)
    assert out["input_ids"] == ids("are you good") + [EOS]
    assert out["labels"] == [IGNORE_INDEX] * 2 + [ID["good"], EOS]
    # min_response_tokens: keep at least 2 response tokens, the prompt keeps the rest (its end)
    out = tokenize_example(tok, prompt, response, max_length=5, min_response_tokens=2)
    assert out["input_ids"] == ids("how are you very long")
    # a huge floor still leaves one prompt token
    out = tokenize_example(tok, prompt, response, max_length=3, min_response_tokens=100)
    assert out["input_ids"] == ids("you very long") and out["labels"][0] == IGNORE_INDEX
    for n in (3, 5, 8, 10):
        assert len(tokenize_example(tok, prompt, response, max_length=n)["input_ids"]) <= n


def test_truncation_of_a_chat_prompt_keeps_its_end(tok):
    messages = [{"role": "user", "content": "hi there how are you"}]
    out = tokenize_example(tok, messages, "good", max_length=5)
    assert out["input_ids"] == ids("are you <|assistant|> good") + [EOS]
    assert out["labels"] == [IGNORE_INDEX] * 3 + [ID["good"], EOS]


@pytest.mark.parametrize(
    "prompt, response, kwargs, match",
    [
        ("hi", ["good"], {}, r"response: expected a string for a plain-string prompt"),
        ("hi", "good", dict(max_length=1), r"max_length: expected an integer >= 2"),
        ("hi", "good", dict(max_length=8.0), r"max_length"),
        ([], "good", {}, r"prompt: empty chat-message list"),
        ([{"role": "user"}], "good", {}, r"prompt: message 0 is not a mapping with 'role' and 'content'"),
        ([{"role": "user", "content": "hi"}], [], {}, r"response: empty chat-message list"),
    ],
)
def test_tokenize_example_rejects_bad_input(tok, prompt, response, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tokenize_example(tok, prompt, response, **{"max_length": 16, **kwargs})


def test_chat_prompt_needs_a_chat_template(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    with pytest.raises(ValueError, match="tokenizer: has no chat_template"):
        tokenize_example(plain, [{"role": "user", "content": "hi"}], "good", max_length=16)


# ----------------------------------------------------------------------------------------------- pairs
def test_build_pair_features_and_collate(tok):
    f0 = build_pair_features(tok, "hi there", "good answer", "bad", max_length=32)
    f1 = build_pair_features(
        tok, [{"role": "user", "content": "how are you"}], "very good answer", "bad answer", max_length=32
    )
    assert f0["chosen_input_ids"] == [BOS] + ids("hi there good answer") + [EOS]
    assert f0["rejected_labels"] == [IGNORE_INDEX] * 3 + [ID["bad"], EOS]
    f0["ref_chosen_logps"], f1["ref_chosen_logps"] = -1.5, -2.5
    batch = collate_pairs([f0, f1], pad_token_id=PAD, extra_keys=["ref_chosen_logps"])
    length = len(f1["chosen_input_ids"])  # the longest sequence of either side
    assert length == 10
    for key in (
        "chosen_input_ids",
        "chosen_attention_mask",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_attention_mask",
        "rejected_labels",
    ):
        assert batch[key].shape == (2, length) and batch[key].dtype == torch.long
    n = len(f0["rejected_input_ids"])
    assert batch["rejected_input_ids"][0].tolist() == f0["rejected_input_ids"] + [PAD] * (length - n)
    assert batch["rejected_attention_mask"][0].tolist() == [1] * n + [0] * (length - n)
    assert batch["rejected_labels"][0].tolist() == f0["rejected_labels"] + [IGNORE_INDEX] * (length - n)
    assert batch["chosen_labels"][1].tolist() == f1["chosen_labels"]
    torch.testing.assert_close(batch["ref_chosen_logps"], torch.tensor([-1.5, -2.5]))


def test_collated_pairs_feed_sequence_logps(tok):
    """End to end: the scored tokens are exactly the response tokens (and EOS) of each row."""
    feats = [
        build_pair_features(tok, "hi there", "good answer", "bad", max_length=32),
        build_pair_features(tok, "how are you", "very good", "bad answer", max_length=32),
    ]
    batch = collate_pairs(feats, pad_token_id=PAD)
    torch.manual_seed(0)
    logits = torch.randn(2, batch["chosen_input_ids"].shape[1], len(WORDS))
    got = sequence_logps(logits, batch["chosen_labels"])
    for b, f in enumerate(feats):
        seq = f["chosen_input_ids"]
        n_prompt = sum(1 for x in f["chosen_labels"] if x == IGNORE_INDEX)
        want = sum(torch.log_softmax(logits[b, t - 1], -1)[seq[t]] for t in range(n_prompt, len(seq)))
        assert got[b].item() == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize(
    "features, pad, extra, match",
    [
        ([], PAD, (), r"features: empty batch"),
        ([{"chosen_input_ids": [1]}], PAD, (), r"features: row 0 has no 'chosen_attention_mask'"),
        (None, None, (), r"pad_token_id: required"),
        ("mismatch", PAD, (), r"features: row 0 has chosen fields of different lengths"),
        ("ok", PAD, ("ref_chosen_logps",), r"features: row 0 has no 'ref_chosen_logps'"),
    ],
)
def test_collate_pairs_rejects_bad_input(tok, features, pad, extra, match):
    good = build_pair_features(tok, "hi", "good", "bad", max_length=8)
    if features is None or features == "ok":
        features = [good]
    elif features == "mismatch":
        features = [{**good, "chosen_labels": good["chosen_labels"][:-1]}]
    with pytest.raises(ValueError, match=match):
        collate_pairs(features, pad_token_id=pad, extra_keys=extra)
