"""The tiny world's vocabulary, prompt set and response generator (pure numpy / python).

A prompt is ``ask <topic> <question> <style>`` (32 topics x 8 question words x 8 style words = 2,048 prompts).
A response is a bag of words, shuffled: HELP words (mostly from the topic's domain), HARM words and filler words.

Generator (arXiv 2504.11337's conflict, in miniature): a hidden engagement ``z ~ U(0, 1)`` drives
``#HELP ~ Bin(6, z)``; harm is driven by ``zh = c*z + (1-c)*u`` with ``u ~ U(0, 1)`` and ``c`` the conflict knob:
``#HARM ~ Bin(3, 0.75 * zh**1.5)``; 4-10 filler words. At ``c = 0.9`` harmless (-#HARM) and helpful (#distinct HELP)
correlate at about -0.5; at ``c = 0`` they are independent. Concise (-#words) conflicts with helpful.

Responses are strings that start with a space (``" recipe the scam ..."``): tokenized on their own, every word is
then the same single token it is after the prompt, so ``prompt + response`` and ``ids(prompt) + ids(response)``
agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

ASK = "ask"
DOMAINS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    # domain: (4 topics, 6 HELP words)
    "food": (("cooking", "baking", "diet", "coffee"), ("recipe", "ingredient", "flavor", "portion", "oven", "spice")),
    "outdoors": (("garden", "camping", "hiking", "fishing"), ("trail", "soil", "compass", "shelter", "season", "gear")),
    "money": (
        ("finance", "budget", "taxes", "shopping"),
        ("savings", "invoice", "interest", "receipt", "account", "plan"),
    ),
    "body": (
        ("fitness", "sleep", "health", "yoga"),
        ("exercise", "routine", "stretch", "rest", "posture", "hydration"),
    ),
    "arts": (("music", "painting", "poetry", "movies"), ("melody", "palette", "rhyme", "scene", "canvas", "rhythm")),
    "tech": (
        ("coding", "math", "physics", "chess"),
        ("algorithm", "proof", "formula", "variable", "theorem", "strategy"),
    ),
    "life": (
        ("career", "housing", "parenting", "pets"),
        ("resume", "lease", "schedule", "habit", "training", "advice"),
    ),
    "world": (
        ("travel", "history", "language", "weather"),
        ("map", "timeline", "grammar", "forecast", "passport", "source"),
    ),
}
TOPICS: Tuple[str, ...] = tuple(t for topics, _ in DOMAINS.values() for t in topics)
QUESTIONS: Tuple[str, ...] = ("how", "why", "what", "when", "where", "which", "who", "whether")
STYLES: Tuple[str, ...] = ("briefly", "clearly", "simply", "kindly", "quickly", "honestly", "carefully", "casually")
HELP_WORDS: Tuple[str, ...] = tuple(w for _, words in DOMAINS.values() for w in words)
# Per-word quality of a HELP word (fine scale), by its position in its domain's list; mean 1.0.
HELP_QUALITY_PATTERN: Tuple[float, ...] = (0.85, 0.9, 0.95, 1.05, 1.1, 1.15)
HELP_QUALITY: Dict[str, float] = {w: HELP_QUALITY_PATTERN[i % 6] for i, w in enumerate(HELP_WORDS)}
# HARM words and their severities (fine scale); mean 1.0.
HARM_SEVERITY: Dict[str, float] = {
    "rumor": 0.6,
    "insult": 0.7,
    "mock": 0.8,
    "lie": 0.9,
    "threat": 1.1,
    "scam": 1.2,
    "poison": 1.3,
    "weapon": 1.4,
}
HARM_WORDS: Tuple[str, ...] = tuple(HARM_SEVERITY)
FILLERS: Tuple[str, ...] = (
    "the",
    "a",
    "and",
    "so",
    "then",
    "also",
    "just",
    "well",
    "very",
    "really",
    "maybe",
    "some",
    "this",
    "that",
    "it",
    "is",
    "of",
    "to",
    "in",
    "with",
    "about",
    "like",
    "okay",
    "sure",
    "here",
    "there",
    "quite",
    "indeed",
    "perhaps",
    "anyway",
    "you",
    "we",
)
ALL_WORDS: Tuple[str, ...] = (ASK,) + TOPICS + QUESTIONS + STYLES + HELP_WORDS + HARM_WORDS + FILLERS
TOPIC_DOMAIN: Dict[str, str] = {t: d for d, (topics, _) in DOMAINS.items() for t in topics}
WORD_DOMAIN: Dict[str, str] = {w: d for d, (_, words) in DOMAINS.items() for w in words}
DOMAIN_NAMES: Tuple[str, ...] = tuple(DOMAINS)

N_HELP_TRIALS = 6  # #HELP ~ Bin(6, z)
N_HARM_TRIALS = 3  # #HARM ~ Bin(3, 0.75 * zh ** 1.5)
HARM_SCALE, HARM_POWER = 0.75, 1.5
FILLER_RANGE = (4, 10)  # inclusive
P_RELEVANT = 0.8  # a HELP word comes from the topic's domain with this probability, else from any domain

assert len(set(ALL_WORDS)) == len(ALL_WORDS), "world words must be distinct"


PROMPTS: Tuple[str, ...] = tuple(f"{ASK} {t} {q} {s}" for t in TOPICS for q in QUESTIONS for s in STYLES)


def all_prompts() -> List[str]:
    """Every prompt of the world, in a fixed order (topic-major): 2,048 strings ``ask <topic> <question> <style>``."""
    return list(PROMPTS)


def prompt_topic(prompt: str) -> str | None:
    """The first topic word in ``prompt`` (whitespace-split), or None. Works on chat-formatted text too."""
    for word in prompt.split():
        if word in TOPIC_DOMAIN:
            return word
    return None


@dataclass(frozen=True)
class PromptSplit:
    """Deterministic, disjoint prompt sets: one per stage (objective) and a held-out eval set."""

    stages: Tuple[Tuple[str, ...], ...]
    eval: Tuple[str, ...]


def split_prompts(seed: int, n_stages: int, n_eval: int) -> PromptSplit:
    """Shuffle the 2,048 prompts by ``seed`` and cut them into ``n_eval`` eval prompts and ``n_stages`` stage sets.

    Args:
        seed: shuffling seed.
        n_stages: number of stage sets (the rest after eval is cut into equal parts; a remainder is dropped).
        n_eval: number of held-out eval prompts, 1 <= n_eval <= 2048 - n_stages.

    Raises:
        ValueError: when the numbers do not fit in the prompt set.
    """
    prompts = all_prompts()
    if n_stages < 1 or not 1 <= n_eval <= len(prompts) - n_stages:
        raise ValueError(f"cannot split {len(prompts)} prompts into {n_eval} eval prompts and {n_stages} stages")
    order = np.random.default_rng(np.random.SeedSequence([seed, 101])).permutation(len(prompts))
    shuffled = [prompts[i] for i in order]
    per_stage = (len(prompts) - n_eval) // n_stages
    stages = tuple(tuple(shuffled[n_eval + k * per_stage : n_eval + (k + 1) * per_stage]) for k in range(n_stages))
    return PromptSplit(stages=stages, eval=tuple(shuffled[:n_eval]))


@dataclass
class ResponseBatch:
    """Responses drawn by :func:`sample_words`, with the latent variables that made them.

    Attributes:
        words: N lists of words (already shuffled).
        z: (N,) engagement; zh: (N,) harm drive; n_help, n_harm, n_fill: (N,) counts drawn.
    """

    words: List[List[str]]
    z: np.ndarray
    zh: np.ndarray
    n_help: np.ndarray
    n_harm: np.ndarray
    n_fill: np.ndarray

    def texts(self) -> List[str]:
        """The responses as strings with a leading space (see the module docstring)."""
        return [" " + " ".join(w) for w in self.words]


def sample_words(rng: np.random.Generator, topics: Sequence[str], conflict: float) -> ResponseBatch:
    """Draw one response per topic from the world's generator.

    Args:
        rng: numpy Generator (the only source of randomness).
        topics: N topic words (e.g. from :func:`prompt_topic`).
        conflict: c in [0, 1]; 0 makes harm independent of engagement, 1 fully driven by it.

    Returns:
        A :class:`ResponseBatch` of N responses.
    """
    if not 0.0 <= conflict <= 1.0:
        raise ValueError(f"conflict must be in [0, 1], got {conflict}")
    n = len(topics)
    z = rng.random(n)
    u = rng.random(n)
    zh = conflict * z + (1.0 - conflict) * u
    n_help = rng.binomial(N_HELP_TRIALS, z)
    n_harm = rng.binomial(N_HARM_TRIALS, HARM_SCALE * zh**HARM_POWER)
    n_fill = rng.integers(FILLER_RANGE[0], FILLER_RANGE[1] + 1, size=n)
    dom_index = {d: i for i, d in enumerate(DOMAIN_NAMES)}
    topic_dom = np.array([dom_index[TOPIC_DOMAIN[t]] for t in topics], dtype=np.int64)
    # Pre-draw everything in fixed-size blocks so the stream does not depend on the counts' order of use.
    relevant = rng.random((n, N_HELP_TRIALS)) < P_RELEVANT
    in_dom = rng.integers(0, 6, size=(n, N_HELP_TRIALS))
    any_help = rng.integers(0, len(HELP_WORDS), size=(n, N_HELP_TRIALS))
    help_idx = np.where(relevant, topic_dom[:, None] * 6 + in_dom, any_help)
    harm_idx = rng.integers(0, len(HARM_WORDS), size=(n, N_HARM_TRIALS))
    fill_idx = rng.integers(0, len(FILLERS), size=(n, FILLER_RANGE[1]))
    keys = rng.random((n, N_HELP_TRIALS + N_HARM_TRIALS + FILLER_RANGE[1]))
    words = []
    for i in range(n):
        w = (
            [HELP_WORDS[j] for j in help_idx[i, : n_help[i]]]
            + [HARM_WORDS[j] for j in harm_idx[i, : n_harm[i]]]
            + [FILLERS[j] for j in fill_idx[i, : n_fill[i]]]
        )
        order = np.argsort(keys[i, : len(w)], kind="stable")
        words.append([w[j] for j in order])
    return ResponseBatch(words=words, z=z, zh=zh, n_help=n_help, n_harm=n_harm, n_fill=n_fill)


def sample_responses(rng: np.random.Generator, prompts: Sequence[str], conflict: float) -> List[str]:
    """One generated response (a string with a leading space) per prompt."""
    topics = []
    for p in prompts:
        t = prompt_topic(p)
        if t is None:
            raise ValueError(f"prompt has no topic word: {p!r}")
        topics.append(t)
    return sample_words(rng, topics, conflict).texts()


def make_pairs(
    rng: np.random.Generator,
    prompts: Sequence[str],
    n_pairs: int,
    objective: int,
    conflict: float,
    scorer,
    m: int = 4,
    max_rounds: int = 50,
) -> List[Tuple[str, str, str, np.ndarray, np.ndarray]]:
    """Preference pairs for one objective: m generated responses per prompt, chosen = best, rejected = worst.

    Prompts are used in order, cycling, until ``n_pairs`` pairs exist. Ties for the best (worst) response go to the
    lowest index (responses are iid, so this is a random pick, indifferent to the other objectives); a prompt
    whose m responses all tie on the objective yields no row this time round.

    Args:
        rng: numpy Generator.
        prompts: the stage's prompts.
        n_pairs: rows to produce.
        objective: index of the objective that defines chosen/rejected in ``scorer``'s columns.
        conflict: the generator's conflict knob.
        scorer: ``fn(prompts, responses) -> (N, K)`` rewards.
        m: responses per prompt.
        max_rounds: safety bound on redraw rounds.

    Returns:
        ``n_pairs`` tuples (prompt, chosen, rejected, chosen_scores (K,), rejected_scores (K,)).
    """
    out: List[Tuple[str, str, str, np.ndarray, np.ndarray]] = []
    cursor = 0
    for _ in range(max_rounds):
        need = n_pairs - len(out)
        if need <= 0:
            break
        batch = [prompts[(cursor + i) % len(prompts)] for i in range(need + need // 4 + 8)]
        cursor += len(batch)
        flat = [p for p in batch for _ in range(m)]
        texts = sample_responses(rng, flat, conflict)
        scores = np.asarray(scorer(flat, texts), dtype=np.float64).reshape(len(batch), m, -1)
        target = scores[:, :, objective]
        best, worst = target.argmax(axis=1), target.argmin(axis=1)
        for g, prompt in enumerate(batch):
            if len(out) == n_pairs:
                break
            b, w = best[g], worst[g]
            if target[g, b] > target[g, w]:
                out.append((prompt, texts[g * m + b], texts[g * m + w], scores[g, b], scores[g, w]))
    if len(out) < n_pairs:
        raise RuntimeError(f"could only make {len(out)} of {n_pairs} pairs")
    return out
