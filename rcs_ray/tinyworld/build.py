"""Build (and cache) the tiny world: tokenizer, pretrained policy, multi-head reward model, stage datasets.

``ensure_world(cfg)`` returns the :class:`WorldPaths` of the world for ``cfg``, building it on first use under
``<cache_dir>/world-<key>`` (key = a short hash of the build-relevant config fields and :data:`WORLD_VERSION`).
The build runs in a temporary directory that is renamed into place at the end, under a file lock: a crash leaves
no half world and two processes never build the same world at once.

Same config -> same tokenizer, same data files byte for byte, same weights (on the same torch build and number of
threads; CPU float reductions depend on both).

Layout of a world::

    world.json                       config, version, seconds per part, corpus / policy-sample stats, conflict
    tokenizer/                       BPE (ByteLevel) + chat template; also saved inside policy/ and reward_model/
    policy/                          LlamaForCausalLM (hidden 128, 2 layers, 4 heads of 32), loads alone
    reward_model/                    LlamaForSequenceClassification, 3 regression heads = objectives
    data/stage1_harmless.jsonl ...   prompt_id, prompt, chosen, rejected, chosen_scores, rejected_scores
    data/eval_prompts.jsonl          prompt_id, prompt
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from rcs_ray.config import TinyWorldConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.tinyworld import world as W
from rcs_ray.tinyworld.rewards import OBJECTIVES, reward_names, score

WORLD_VERSION = "1"
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ ' ' + m['content'] | trim }}"
    "{{ eos_token }}{% else %}{% if not loop.first %} {% endif %}{{ m['content'] | trim }}{% endif %}{% endfor %}")
MODEL_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True)
# Leading BOS count of training sequences (0, 1, 2) and its probabilities: the policy and the reward model accept
# a prompt tokenized with or without the BOS, or with a doubled one (chat template + add_special_tokens).
BOS_MIX = (0.15, 0.75, 0.10)
RESOLVABLE = ("policy", "reward_model", "tokenizer", "data", "data/<file>", "root")


@dataclass(frozen=True)
class WorldPaths:
    """Absolute paths of a built world's parts."""
    root: str
    tokenizer: str
    policy: str
    reward_model: str
    data_dir: str
    stage_files: Tuple[str, ...]
    eval_prompts: str
    info: str
    objectives: Tuple[str, ...] = OBJECTIVES


def stage_file_names() -> List[str]:
    """``stage{k}_{objective}.jsonl`` for k = 1..K, in stage order."""
    return [f"stage{k + 1}_{name}.jsonl" for k, name in enumerate(OBJECTIVES)]


def world_paths(root: str) -> WorldPaths:
    """The :class:`WorldPaths` of a world rooted at ``root`` (nothing is checked or built)."""
    root = os.path.abspath(root)
    data = os.path.join(root, "data")
    return WorldPaths(root=root, tokenizer=os.path.join(root, "tokenizer"), policy=os.path.join(root, "policy"),
                      reward_model=os.path.join(root, "reward_model"), data_dir=data,
                      stage_files=tuple(os.path.join(data, f) for f in stage_file_names()),
                      eval_prompts=os.path.join(data, "eval_prompts.jsonl"), info=os.path.join(root, "world.json"))


def _check(cfg: TinyWorldConfig) -> None:
    n_max = len(W.all_prompts()) // 2
    for ok, msg in [(0.0 <= cfg.conflict <= 1.0, f"conflict must be in [0, 1], got {cfg.conflict}"),
                    (cfg.reward_scale in ("integer", "fine"),
                     f"reward_scale must be 'integer' or 'fine', got {cfg.reward_scale!r}"),
                    (cfg.pairs_per_stage >= 1, f"pairs_per_stage must be >= 1, got {cfg.pairs_per_stage}"),
                    (64 <= cfg.eval_prompts <= n_max, f"eval_prompts must be in [64, {n_max}], got {cfg.eval_prompts}"),
                    (cfg.pretrain_examples >= 1024, f"pretrain_examples must be >= 1024, got {cfg.pretrain_examples}"),
                    (cfg.rm_examples >= 1024, f"rm_examples must be >= 1024, got {cfg.rm_examples}")]:
        if not ok:
            raise RcsInputError(f"tinyworld.{msg}")


def build_fields(cfg: TinyWorldConfig) -> dict:
    """The config fields that change what is built (everything but ``cache_dir``), plus the version."""
    fields = asdict(cfg)
    fields.pop("cache_dir", None)
    return {"version": WORLD_VERSION, **fields}


def world_key(cfg: TinyWorldConfig) -> str:
    """Short hash of :func:`build_fields`: worlds with the same key are identical."""
    blob = json.dumps(build_fields(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def world_root(cfg: TinyWorldConfig) -> str:
    """Absolute root directory of the world for ``cfg`` (relative ``cache_dir`` is taken from the current dir)."""
    return os.path.abspath(os.path.join(os.path.expanduser(cfg.cache_dir), f"world-{world_key(cfg)}"))


# ----------------------------------------------------------------------------------------------- tokenizer
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
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    line = " ".join(W.ALL_WORDS)
    backend.train_from_iterator(W.all_prompts() + [line, " " + line] * 8 + list(W.ALL_WORDS), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  model_max_length=MODEL_SHAPE["max_position_embeddings"])
    tok.chat_template = CHAT_TEMPLATE
    vocab = tok.get_vocab()
    missing = [w for w in W.ALL_WORDS if w not in vocab or "\u0120" + w not in vocab]
    if missing:
        raise RuntimeError(f"tokenizer: world words are not single tokens: {missing}")
    return tok


def _encode(tok, rng, prompts: Sequence[str], responses: Sequence[List[str]], eos_prob: float = 1.0):
    """Token ids of ``BOS*b + prompt + response [+ EOS]`` (b drawn from BOS_MIX) and the prompt lengths.

    Identical to tokenizing ``prompt + " " + " ".join(words)`` (tested); built from a word table for speed.
    """
    ids = {w: tok.convert_tokens_to_ids("\u0120" + w) for w in W.ALL_WORDS}   # words after the first: " word"
    bare_ask = tok.convert_tokens_to_ids(W.ASK)
    n_bos = rng.choice(len(BOS_MIX), size=len(prompts), p=BOS_MIX)
    add_eos = rng.random(len(prompts)) < eos_prob
    seqs, prompt_lens = [], []
    for p, words, b, e in zip(prompts, responses, n_bos, add_eos):
        head = [tok.bos_token_id] * int(b) + [bare_ask] + [ids[w] for w in p.split()[1:]]
        seqs.append(head + [ids[w] for w in words] + ([tok.eos_token_id] if e else []))
        prompt_lens.append(len(head))
    return seqs, np.array(prompt_lens)


def _padded(seqs: List[List[int]], pad: int) -> np.ndarray:
    out = np.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def _model_config(tok, **extra):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **MODEL_SHAPE, **extra)


def _train_loop(model, batches: Callable[[int], tuple], steps: int, lr: float, loss_fn, desc: str,
                progress: bool) -> List[float]:
    """AdamW with linear warm-up and cosine decay to 10%; returns the per-step losses."""
    import torch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, desc=f"tinyworld {desc}", file=sys.stderr, mininterval=2.0) if progress else None
    losses = []
    model.train()
    for step in range(steps):
        loss = loss_fn(model, *batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    return losses


def pretrain_policy(tok, cfg: TinyWorldConfig, prompts: Sequence[str], out_dir: str, progress: bool,
                    batch_size: int = 64, lr: float = 2e-3) -> dict:
    """Pretrain the policy on ``cfg.pretrain_examples`` generated prompt+response examples (loss on the response
    and its EOS only) and save it with the tokenizer to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=cfg.pretrain_examples)]
    batch = W.sample_words(rng, [W.prompt_topic(p) for p in chosen], cfg.conflict)
    seqs, plen = _encode(tok, rng, chosen, batch.words)
    ids = torch.from_numpy(_padded(seqs, tok.pad_token_id))
    # target[t] = the token at t + 1 when it is part of the response (or its EOS), else -100
    target = torch.full_like(ids, -100)
    target[:, :-1] = ids[:, 1:]
    target[torch.arange(ids.shape[1])[None, :] < torch.from_numpy(plen - 1)[:, None]] = -100
    target[target == tok.pad_token_id] = -100
    lengths = torch.tensor([len(s) for s in seqs])
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(_model_config(tok))
    steps = max(1, cfg.pretrain_examples // batch_size)

    def batches(step):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        width = int(lengths[sl].max())
        return ids[sl, :width], target[sl, :width]

    def loss_fn(m, x, y):
        # Right padding + causal attention: no mask needed. The LM head runs on the scored positions only.
        hidden = m.model(input_ids=x).last_hidden_state
        keep = y != -100
        return torch.nn.functional.cross_entropy(m.lm_head(hidden[keep]), y[keep])

    losses = _train_loop(model, batches, steps, lr, loss_fn, "policy", progress)
    model.generation_config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                               max_new_tokens=32, bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"examples": cfg.pretrain_examples, "steps": steps, "batch_size": batch_size, "lr": lr,
            "params": int(sum(p.numel() for p in model.parameters())),
            "final_loss": round(float(np.mean(losses[-20:])), 4)}


def train_reward_model(tok, cfg: TinyWorldConfig, prompts: Sequence[str], policy_dir: str, out_dir: str,
                       progress: bool, batch_size: int = 128, lr: float = 2e-3) -> dict:
    """Train the 3-head regression RM on standardized fine-scale rule rewards of generated responses.

    The backbone starts from the pretrained policy's. Half the texts end with EOS, half do not (decoded samples
    usually have none). Head j predicts ``(r_j - mean_j) / std_j``; mean and std are stored in world.json and
    ``reward_model/tinyworld_rm.json``.
    """
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=cfg.rm_examples)]
    batch = W.sample_words(rng, [W.prompt_topic(p) for p in chosen], cfg.conflict)
    target = score(chosen, batch.texts(), reward_names("fine"))
    mean, std = target.mean(axis=0), target.std(axis=0)
    seqs, _ = _encode(tok, rng, chosen, batch.words, eos_prob=0.5)
    y = torch.tensor((target - mean) / std, dtype=torch.float32)
    ids = torch.from_numpy(_padded(seqs, tok.pad_token_id))
    lengths = torch.tensor([len(s) for s in seqs])
    names = list(OBJECTIVES)
    config = _model_config(tok, num_labels=len(names), problem_type="regression",
                           id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(cfg.seed + 1)
    model = LlamaForSequenceClassification(config)
    model.model.load_state_dict(LlamaForCausalLM.from_pretrained(policy_dir).model.state_dict())
    steps = max(1, cfg.rm_examples // batch_size)

    def batches(step):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        return ids[sl, :int(lengths[sl].max())], y[sl]

    def loss_fn(m, x, t):  # pooled at the last non-pad token (right padding, causal: no mask needed)
        return torch.nn.functional.mse_loss(m(input_ids=x).logits, t)

    losses = _train_loop(model, batches, steps, lr, loss_fn, "reward model", progress)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    norm = {"objectives": names, "target": reward_names("fine"), "mean": mean.round(6).tolist(),
            "std": std.round(6).tolist()}
    with open(os.path.join(out_dir, "tinyworld_rm.json"), "w") as fh:
        json.dump(norm, fh, indent=1)
    return {"examples": cfg.rm_examples, "steps": steps, "lr": lr, "final_mse": round(float(np.mean(losses[-20:])), 4),
            **norm}


# ----------------------------------------------------------------------------------------------- the build
def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[tinyworld] {msg}", file=sys.stderr, flush=True)


def _build(cfg: TinyWorldConfig, root: str, progress: bool) -> dict:
    """Build every part of the world into ``root`` (an empty directory) and write world.json last."""
    from rcs_ray.tinyworld.generate import measure, write_datasets

    paths = world_paths(root)
    seconds, t_all = {}, time.time()
    split = W.split_prompts(cfg.seed, len(OBJECTIVES), cfg.eval_prompts)
    train_prompts = [p for stage in split.stages for p in stage]

    def part(name, fn, *args):
        t = time.time()
        out = fn(*args)
        seconds[name] = round(time.time() - t, 2)
        _log(progress, f"{name}: done in {seconds[name]:.1f} s")
        return out

    tok = part("tokenizer", build_tokenizer)
    tok.save_pretrained(paths.tokenizer)
    pretrain = part("policy", pretrain_policy, tok, cfg, train_prompts, paths.policy, progress)
    rm = part("reward_model", train_reward_model, tok, cfg, train_prompts, paths.policy, paths.reward_model, progress)
    data = part("datasets", write_datasets, cfg, split, paths.data_dir, stage_file_names())
    measured = part("measure", measure, paths, cfg, split.eval)
    seconds["total"] = round(time.time() - t_all, 2)
    info = {"version": WORLD_VERSION, "key": world_key(cfg), "config": asdict(cfg), "objectives": list(OBJECTIVES),
            "reward_functions": {s: [f"rcs_ray.tinyworld.rewards:{n}" for n in reward_names(s)]
                                 for s in ("integer", "fine")},
            "tokenizer": {"vocab_size": len(tok), "chat_template": CHAT_TEMPLATE},
            "model_shape": MODEL_SHAPE,
            "prompts": {"total": len(W.all_prompts()), "eval": len(split.eval),
                        "per_stage": [len(s) for s in split.stages]},
            "words": {"topics": len(W.TOPICS), "questions": len(W.QUESTIONS), "styles": len(W.STYLES),
                      "help": len(W.HELP_WORDS), "harm": len(W.HARM_WORDS), "fillers": len(W.FILLERS)},
            "pretrain": pretrain, "reward_model": rm, "datasets": data, "measure": measured, "seconds": seconds}
    with open(paths.info, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    return info


def ensure_world(cfg: Optional[TinyWorldConfig] = None, progress: bool = True) -> WorldPaths:
    """The world for ``cfg`` (default config when None): built on first use, then read from the cache.

    Raises:
        RcsInputError: a config value out of range.
    """
    cfg = cfg or TinyWorldConfig()
    _check(cfg)
    root = world_root(cfg)
    if os.path.isfile(os.path.join(root, "world.json")):
        return world_paths(root)
    from filelock import FileLock

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    with FileLock(root + ".lock"):
        if os.path.isfile(os.path.join(root, "world.json")):
            return world_paths(root)
        for stale in glob.glob(root + ".tmp-*"):     # left by a crashed build of this world; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if os.path.isdir(root):                       # a world dir without world.json is not a world
            shutil.rmtree(root)
        tmp = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(root) + ".tmp-")
        _log(progress, f"building the tiny world {world_key(cfg)} in {root} (once; cached afterwards)")
        try:
            info = _build(cfg, tmp, progress)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(progress, f"built in {info['seconds']['total']:.0f} s")
    return world_paths(root)


def resolve(path: str, cfg: Optional[TinyWorldConfig] = None, progress: bool = True) -> str:
    """Map ``tinyworld:<name>`` to a real path of the world for ``cfg`` (building it if needed).

    Names: ``policy``, ``reward_model``, ``tokenizer``, ``data`` (the dir), ``data/<file>`` (e.g.
    ``data/stage2_helpful.jsonl``, ``data/eval_prompts.jsonl``), ``root``. Any string not starting with
    ``tinyworld:`` is returned unchanged. Returned paths are absolute: resolve in the driver, before the paths
    travel to Ray workers whose working directory differs.

    Raises:
        RcsInputError: an unknown ``tinyworld:`` name (checked before anything is built).
    """
    if not isinstance(path, str) or not path.startswith("tinyworld:"):
        return path
    name = path[len("tinyworld:"):].strip("/")
    files = stage_file_names() + ["eval_prompts.jsonl"]
    if name.startswith("data/"):
        if name[len("data/"):] not in files:
            raise RcsInputError(f"unknown tiny-world data file {path!r}; files: "
                                + ", ".join(f"tinyworld:data/{f}" for f in files))
    elif name not in ("policy", "reward_model", "tokenizer", "data", "root"):
        raise RcsInputError(f"unknown tiny-world asset {path!r}; names: "
                            + ", ".join(f"tinyworld:{n}" for n in RESOLVABLE))
    paths = ensure_world(cfg, progress=progress)
    if name.startswith("data/"):
        return os.path.join(paths.data_dir, name[len("data/"):])
    return {"policy": paths.policy, "reward_model": paths.reward_model, "tokenizer": paths.tokenizer,
            "data": paths.data_dir, "root": paths.root}[name]
