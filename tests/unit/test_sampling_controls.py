"""The HF engine's sampling controls with vLLM's meaning (rcs_ray.sampling.hf_sampling), hand-computed: top_k and
min_p masks, the repetition penalty over prompt and response but not padding, and where a stop string cuts."""

import numpy as np
import pytest
import torch

from rcs_ray.sampling.hf_sampling import GumbelNoise, StopStrings, first_stop, stop_cut

pytestmark = pytest.mark.unit

PROBS = np.array([0.5, 0.3, 0.15, 0.05])


def frequencies(**controls):
    logits = torch.tensor(np.log(PROBS), dtype=torch.float32).repeat(4000, 1)
    picks = GumbelNoise(range(4000), 1.0, 1.0, **controls)(None, logits).argmax(-1).numpy()
    return np.bincount(picks, minlength=4) / 4000


@pytest.mark.parametrize(
    "controls, kept",
    [
        (dict(top_k=2), [0, 1]),  # the two most likely
        (dict(top_k=4), [0, 1, 2, 3]),  # k >= vocabulary: off
        (dict(min_p=0.5), [0, 1]),  # p >= 0.5 * 0.5
        (dict(min_p=0.2), [0, 1, 2]),  # p >= 0.2 * 0.5
        (dict(min_p=0.2, top_k=1), [0]),
    ],
)
def test_top_k_and_min_p_sample_the_renormalised_rest(controls, kept):
    want = np.zeros(4)
    want[kept] = PROBS[kept] / PROBS[kept].sum()
    np.testing.assert_allclose(frequencies(**controls), want, atol=0.03)


def test_repetition_penalty_counts_prompt_and_response_but_not_padding():
    scores = torch.tensor([[2.0, -1.0, 0.5, 0.0, 3.0]] * 2)
    # row 0: padding (token 2) then tokens 0, 1; row 1: token 2 is real, then 4
    input_ids = torch.tensor([[2, 2, 0, 1], [2, 4, 4, 4]])
    got = GumbelNoise([1, 2], 0.0, 1.0, repetition_penalty=2.0, starts=[2, 0])(input_ids, scores)
    # vLLM: a seen token's positive score / 2, negative * 2 (temperature 0: no noise)
    assert got.tolist() == [[1.0, -2.0, 0.5, 0.0, 3.0], [2.0, -1.0, 0.25, 0.0, 1.5]]
    every = GumbelNoise([1, 2], 0.0, 1.0, repetition_penalty=2.0)(input_ids, scores)
    assert every[0, 2] == 0.25  # without starts the padding token would count
    off = GumbelNoise([1, 2], 0.0, 1.0)(input_ids, scores)
    assert torch.equal(off, scores)  # defaults: today's scores


class Chars:
    """One token per character: decode is the join (as a byte-level tokenizer's is on ASCII)."""

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(chr(t) for t in tokens)

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r) for r in rows]


def codes(text):
    return [ord(c) for c in text]


def test_a_stop_string_cuts_before_itself_as_vllm_does():
    text = "abc\n\ndef END x"
    assert stop_cut(Chars(), codes(text), text, ["\n\n"]) == ("abc", 5)  # 5 tokens reached it
    assert stop_cut(Chars(), codes(text), text, ["END", "\n\n"]) == ("abc", 5)  # the one completed first wins
    assert stop_cut(Chars(), codes(text), text, ["zz"]) is None
    assert stop_cut(Chars(), codes(text), text, []) is None
    assert first_stop("xab", ["ab", "b"]) == (1, 3)  # ties: the first listed
    assert first_stop("xab", ["b", "ab"]) == (2, 3)


def test_stop_strings_look_at_the_response_only():
    """A prompt ending with a newline and a first generated newline do not make "\\n\\n" (transformers'
    stop_strings would stop there: it reads the prompt too); the response's own "\\n\\n" does."""
    criterion = StopStrings(Chars(), ["\n\n"], width=3)
    rows = torch.tensor([codes("ab\n") + codes("\nx\n"), codes("ab\n") + codes("x\n\n")])
    assert criterion(rows, None).tolist() == [False, True]
