"""Data of the tiny world: the tokenizer and training sequences, the stage datasets, and sampling from a policy (HF
transformers, CPU). What world.json records about them is measured in :mod:`rcs_ray.tinyworld.measure`."""

from __future__ import annotations

import json
import os
from typing import List, Sequence

import numpy as np

from rcs_ray.tinyworld import world as W
from rcs_ray.tinyworld.rewards import OBJECTIVES, reward_names, score

# Leading BOS count of training sequences (0, 1, 2) and its probabilities: the policy and the reward model accept
# a prompt tokenized with or without the BOS, or with a doubled one (chat template + add_special_tokens).
BOS_MIX = (0.15, 0.75, 0.10)
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ ' ' + m['content'] | trim }}"
    "{{ eos_token }}{% else %}{% if not loop.first %} {% endif %}{{ m['content'] | trim }}{% endif %}{% endfor %}"
)


def build_tokenizer():
    """Train the world's byte-level BPE (deterministic; every world word becomes one token, with or without a
    leading space) and wrap it as a ``PreTrainedTokenizerFast`` with BOS/EOS/PAD and the chat template.

    The template renders ``<s>`` + the user text (the raw prompt format the policy was trained on); the
    generation prompt adds nothing, the response follows directly (its words carry a leading space). The
    tokenizer adds no special tokens on its own.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=[PAD, BOS, EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    line = " ".join(W.ALL_WORDS)
    backend.train_from_iterator(W.all_prompts() + [line, " " + line] * 8 + list(W.ALL_WORDS), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=512
    )
    tok.chat_template = CHAT_TEMPLATE
    vocab = tok.get_vocab()
    missing = [w for w in W.ALL_WORDS if w not in vocab or "\u0120" + w not in vocab]
    if missing:
        raise RuntimeError(f"tokenizer: world words are not single tokens: {missing}")
    return tok


def save_tokenizer(tok, out_dir: str) -> None:
    """``save_pretrained`` plus, for older transformers, the class name ``PreTrainedTokenizerFast`` and the chat
    template inside tokenizer_config.json (transformers 5 loads both forms)."""
    tok.save_pretrained(out_dir)
    path = os.path.join(out_dir, "tokenizer_config.json")
    with open(path, encoding="utf-8") as fh:
        conf = json.load(fh)
    conf.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(conf, fh, indent=2, sort_keys=True)


def write_datasets(cfg, split: W.PromptSplit, data_dir: str, file_names: Sequence[str]) -> dict:
    """Write the K stage files (``file_names``, in objective order) and the eval prompts.

    Stage k: ``cfg.pairs_per_stage`` rows from the stage's prompts, m=4 generated responses per prompt, chosen =
    best and rejected = worst on objective k at ``cfg.reward_scale`` (see :func:`world.make_pairs`).

    Returns:
        Per-file statistics: rows, prompts, mean score gap (chosen - rejected) per objective, and the fractions of
        pairs that are not RC (ties count) / reversed on each other objective.
    """
    os.makedirs(data_dir, exist_ok=True)
    names = reward_names(cfg.reward_scale)
    stats = {}
    for k, fname in enumerate(file_names):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 10 + k]))
        pairs = W.make_pairs(
            rng, split.stages[k], cfg.pairs_per_stage, k, cfg.conflict, lambda p, r: score(p, r, names)
        )
        with open(os.path.join(data_dir, fname), "w", encoding="utf-8") as fh:
            for i, (prompt, ch, rj, cs, rs) in enumerate(pairs):
                fh.write(
                    json.dumps(
                        {
                            "prompt_id": f"s{k + 1}-{i:05d}",
                            "prompt": prompt,
                            "chosen": ch,
                            "rejected": rj,
                            "chosen_scores": [round(float(v), 6) for v in cs],
                            "rejected_scores": [round(float(v), 6) for v in rs],
                        }
                    )
                    + "\n"
                )
        diff = np.array([c - r for _, _, _, c, r in pairs])
        stats[fname] = {
            "rows": len(pairs),
            "prompts": len(split.stages[k]),
            "mean_gap": np.round(diff.mean(axis=0), 4).tolist(),
            "non_rc_on": {
                OBJECTIVES[j]: round(float((diff[:, j] <= 0).mean()), 4) for j in range(len(OBJECTIVES)) if j != k
            },
            "reversed_on": {
                OBJECTIVES[j]: round(float((diff[:, j] < 0).mean()), 4) for j in range(len(OBJECTIVES)) if j != k
            },
        }
    with open(os.path.join(data_dir, "eval_prompts.jsonl"), "w", encoding="utf-8") as fh:
        for i, prompt in enumerate(split.eval):
            fh.write(json.dumps({"prompt_id": f"eval-{i:05d}", "prompt": prompt}) + "\n")
    return stats


def encode_examples(tok, rng, prompts: Sequence[str], responses: Sequence[List[str]], eos_prob: float = 1.0):
    """Training sequences ``BOS*b + prompt + response [+ EOS]`` as token ids, built from a word table for speed.

    Identical to tokenizing ``"<s>"*b + prompt + " " + " ".join(words) [+ "</s>"]`` (tested). ``b`` (0, 1 or 2) is
    drawn from :data:`BOS_MIX`, EOS is appended with probability ``eos_prob``.

    Args:
        tok: the world tokenizer.
        rng: numpy Generator.
        prompts: N world prompts.
        responses: N word lists.
        eos_prob: probability of ending a sequence with EOS.

    Returns:
        (N lists of token ids, (N,) prompt lengths in tokens including the BOS).
    """
    ids = {w: tok.convert_tokens_to_ids("\u0120" + w) for w in W.ALL_WORDS}  # words after the first: " word"
    bare_ask = tok.convert_tokens_to_ids(W.ASK)
    n_bos = rng.choice(len(BOS_MIX), size=len(prompts), p=BOS_MIX)
    add_eos = rng.random(len(prompts)) < eos_prob
    seqs, prompt_lens = [], []
    for p, words, b, e in zip(prompts, responses, n_bos, add_eos):
        head = [tok.bos_token_id] * int(b) + [bare_ask] + [ids[w] for w in p.split()[1:]]
        seqs.append(head + [ids[w] for w in words] + ([tok.eos_token_id] if e else []))
        prompt_lens.append(len(head))
    return seqs, np.array(prompt_lens)


def padded(seqs: List[List[int]], pad: int) -> np.ndarray:
    """(N, max_len) int64 array of right-padded sequences."""
    out = np.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def chat_prompts(tok, prompts: Sequence[str]) -> List[str]:
    from rcs_ray.prompting import prompt_text

    return [prompt_text(tok, p, use_chat_template=True) for p in prompts]


def generate_ids(
    model,
    tok,
    prompts: Sequence[str],
    n: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> List[List[List[int]]]:
    """Sample ``n`` completions per prompt with HF ``generate`` (chat template, left padding, top_k off).

    Returns:
        ``[prompt][sample] -> token ids`` of the completion, ending with EOS when the model stopped by itself.
    """
    import torch

    torch.manual_seed(seed)
    texts = chat_prompts(tok, prompts)
    out: List[List[List[int]]] = []
    for start in range(0, len(texts), batch_size):
        enc = tok(
            texts[start : start + batch_size],
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        kwargs = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            if temperature > 0
            else dict(do_sample=False)
        )
        with torch.no_grad():
            seqs = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **kwargs,
            )
        gen = seqs[:, enc["input_ids"].shape[1] :].tolist()
        for i in range(len(gen) // n):
            group = []
            for ids in gen[i * n : (i + 1) * n]:
                if tok.eos_token_id in ids:
                    ids = ids[: ids.index(tok.eos_token_id) + 1]
                group.append([t for t in ids if t != tok.pad_token_id])
            out.append(group)
    return out


def generate(
    policy_dir: str,
    prompts: Sequence[str],
    n: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
) -> List[List[str]]:
    """Sample ``n`` responses per prompt from the policy in ``policy_dir`` (deterministic for a given seed).

    Args:
        policy_dir: a directory ``AutoModelForCausalLM`` / ``AutoTokenizer`` load (e.g. a world's ``policy``).
        prompts: plain prompts (``ask <topic> <question> <style>``); the chat template is applied.
        n: samples per prompt.
        max_new_tokens: generation budget (world responses need at most 20 tokens).
        temperature: sampling temperature; 0 means greedy.
        seed: torch seed set once before the first batch.
        batch_size: prompts per ``generate`` call.

    Returns:
        ``len(prompts)`` lists of ``n`` decoded responses (special tokens removed; they start with a space).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    ids = generate_ids(model, tok, prompts, n, max_new_tokens, temperature, seed, batch_size)
    return [[tok.decode(s, skip_special_tokens=True) for s in group] for group in ids]
