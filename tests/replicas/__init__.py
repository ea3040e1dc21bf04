"""Tiny random-weight replicas of the model families users name, built locally (nothing downloaded).

Each keeps its family's real conventions -- directory layout, config fields, custom code, special tokens, chat
template -- so the real loading code runs on them:

- :func:`llama3_policy` -- a Llama-3-Instruct-style chat policy: ``<|begin_of_text|>``, header-style template,
  ``<|eot_id|>`` ends a turn (``generation_config.eos_token_id`` = [end_of_text, eot_id]; the tokenizer's EOS is
  ``<|end_of_text|>``), no pad token;
- :func:`qwen2_policy` -- a Qwen2-Instruct-style policy: ChatML with the default system message, ``<|im_end|>``;
- :func:`qwen3_policy` -- the same with a Qwen3-style template: no default system message, ``enable_thinking:
  false`` ends the generation prompt with an empty ``<think>\n\n</think>\n\n`` block (the block the template also
  writes before the last assistant turn's content);
- :func:`armorm` -- an ArmoRM-style multi-objective RM: ``modeling_custom.py`` in the directory, ``auto_map``
  (needs ``trust_remote_code``), 19 objective ``rewards``, a gated ``score`` that is also ``logits``;
- :func:`safe_rlhf_cost` -- a safe-rlhf cost model: ``LlamaModelForScore`` layout (``model.*``, ``score_head``),
  ``score_dim``, ``score_type: cost``, no chat template (beaver's own prompt format);
- :func:`classifier_rm` -- a standard one-label ``LlamaForSequenceClassification`` RM with its own chat template;
- :func:`judge` -- a small generative judge (Llama-3-style);
- datasets in the public schemas of PKU-SafeRLHF, HelpSteer2 and UltraFeedback-binarized, as ``save_to_disk``
  directories (:func:`datasets_dir`, from :mod:`tests.replicas.public_datasets`) and in an HF hub cache
  (:func:`hub_cache`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List

from tests.replicas.public_datasets import (  # noqa: F401 - re-exported: the replicas' datasets
    DATASETS,
    WORDS,
    datasets_dir,
    helpsteer2_rows,
    pku_rows,
    ultrafeedback_rows,
)

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    "You are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant"
    "\\n' }}{% endif %}"
)
QWEN3_TEMPLATE = (  # Qwen3's rules for system, user, the last assistant turn and thinking
    "{%- for message in messages %}{%- if message['role'] == 'assistant' %}{%- set content = message['content'] %}"
    "{%- set reasoning = '' %}{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}{%- if loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
RM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\\n{{ m['content'] | trim }}"
    "<end_of_turn>\\n{% endfor %}"
)
SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    max_position_embeddings=512,
)
HERE = os.path.dirname(os.path.abspath(__file__))


def _bpe(specials: List[str], **tokens):
    """A byte-level BPE over :data:`WORDS` with ``specials`` as added special tokens, wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    line = " ".join(WORDS)
    backend.train_from_iterator([line, " " + line, "\n\n" + line] * 4 + WORDS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=512, **tokens)


def llama3_tokenizer():
    from tokenizers import processors

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = _bpe(specials, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(  # Llama 3 prepends BOS to plain text
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def _save_causal(tok, path: str, cls: str, eos: List[str], seed: int, **config) -> str:
    import torch
    import transformers
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    conf_cls = getattr(transformers, cls.replace("ForCausalLM", "Config"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else None
    model = getattr(transformers, cls)(
        conf_cls(
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.convert_tokens_to_ids(eos),
            pad_token_id=pad,
            **{**SHAPE, **config},
        )
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
        eos_token_id=tok.convert_tokens_to_ids(eos),
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def llama3_policy(path: str, seed: int = 0) -> str:
    return _save_causal(
        llama3_tokenizer(), path, "LlamaForCausalLM", ["<|end_of_text|>", "<|eot_id|>"], seed, tie_word_embeddings=False
    )


def qwen2_policy(path: str, seed: int = 1, template: str = QWEN2_TEMPLATE) -> str:
    tok = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = template
    return _save_causal(tok, path, "Qwen2ForCausalLM", ["<|im_end|>", "<|endoftext|>"], seed, tie_word_embeddings=True)


def qwen3_policy(path: str, seed: int = 7) -> str:
    return qwen2_policy(path, seed, QWEN3_TEMPLATE)


def judge(path: str, seed: int = 3) -> str:
    return _save_causal(llama3_tokenizer(), path, "LlamaForCausalLM", ["<|end_of_text|>", "<|eot_id|>"], seed)


def armorm(path: str, seed: int = 4) -> str:
    """ArmoRM's layout: its custom code beside the weights, ``auto_map``, ``num_objectives`` 19, a pad id of its own
    (its code finds the sequence end by the first pad token, so inputs are right-padded with it)."""
    import importlib.util

    import torch
    from transformers import LlamaConfig

    tok = llama3_tokenizer()
    tok.add_special_tokens({"pad_token": "<|reserved_special_token_0|>"})
    os.makedirs(path, exist_ok=True)
    shutil.copy(os.path.join(HERE, "armorm_modeling.py"), os.path.join(path, "modeling_custom.py"))
    pattern = tok("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)["input_ids"]
    config = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|eot_id|>"),
        num_labels=1,
        **SHAPE,
    )
    config.update(
        {
            "architectures": ["LlamaForRewardModelWithGating"],
            "num_objectives": 19,
            "gating_temperature": 10,
            "gating_hidden_dim": 32,
            "gating_n_hidden": 1,
            "gating_token_pattern": pattern,
            "auto_map": {"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
        }
    )
    spec = importlib.util.spec_from_file_location("armorm_replica", os.path.join(path, "modeling_custom.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.LlamaForRewardModelWithGating(config)
    model.save_pretrained(path)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:  # save_pretrained drops auto_map
        saved = json.load(fh)
    saved["auto_map"] = config.auto_map
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(saved, fh, indent=2)
    tok.save_pretrained(path)
    return path


def safe_rlhf_cost(path: str, seed: int = 5) -> str:
    """A beaver-style cost model: ``model.*`` backbone keys, ``score_head.weight``, safe-rlhf's config fields."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel

    tok = _bpe(
        ["<unk>", "<s>", "</s>", "<pad>"], bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **SHAPE,
    )
    config.update(
        {
            "architectures": ["LlamaModelForScore"],
            "score_dim": 1,
            "bias": False,
            "score_type": "cost",
            "do_normalize": False,
            "normalizer_type": None,
        }
    )
    torch.manual_seed(seed)
    backbone = LlamaModel(config)
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state["score_head.weight"] = torch.randn(1, config.hidden_size) * 0.5
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def classifier_rm(path: str, seed: int = 6) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = _bpe(
        ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    tok.chat_template = RM_TEMPLATE
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tok),
            num_labels=1,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **SHAPE,
        )
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _commit(name: str) -> str:
    import hashlib

    return hashlib.sha1(name.encode()).hexdigest()


def hub_cache(root: str, models: Dict[str, str]) -> str:
    """An HF hub cache at ``root``: ``models--org--name`` snapshots of ``models`` (Hub ID -> model dir) and each
    dataset as ``datasets--org--name`` parquet shards (``data/<split>-00000-of-00001.parquet``), with refs/main."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def snapshot(kind: str, repo: str) -> str:
        base = os.path.join(root, f"{kind}--{repo.replace('/', '--')}")
        commit = _commit(repo)
        os.makedirs(os.path.join(base, "refs"), exist_ok=True)
        with open(os.path.join(base, "refs", "main"), "w") as fh:
            fh.write(commit)
        return os.path.join(base, "snapshots", commit)

    for repo, src in models.items():
        shutil.copytree(src, snapshot("models", repo), dirs_exist_ok=True)
    for _, repo, splits in DATASETS.values():
        snap = snapshot("datasets", repo)
        os.makedirs(os.path.join(snap, "data"), exist_ok=True)
        for split, rows in splits().items():
            pq.write_table(pa.Table.from_pylist(rows), os.path.join(snap, "data", f"{split}-00000-of-00001.parquet"))
        with open(os.path.join(snap, "README.md"), "w") as fh:
            fh.write(f"# {repo} (replica)\n")
    return root


def build_all(root: str) -> Dict[str, str]:
    """Every replica under ``root``; returns name -> path (``models`` and ``data`` are the RCS_MODELS / RCS_DATA
    directories of the paper configs)."""
    models = os.path.join(root, "models")
    out = {
        "models": models,
        "data": datasets_dir(os.path.join(root, "data")),
        "policy": llama3_policy(os.path.join(models, "policy-sft")),
        "qwen2": qwen2_policy(os.path.join(root, "qwen2-policy")),
        "qwen3": qwen3_policy(os.path.join(root, "qwen3-policy")),
        "cost": safe_rlhf_cost(os.path.join(models, "beaver-7b-v1.0-cost")),
        "helpful_rm": classifier_rm(os.path.join(models, "helpfulness-rm")),
        "armorm": armorm(os.path.join(models, "ArmoRM-Llama3-8B-v0.1")),
        "judge": judge(os.path.join(root, "judge")),
    }
    out["hub"] = hub_cache(
        os.path.join(root, "hub"),
        {
            "meta-llama/Meta-Llama-3-8B-Instruct": out["policy"],
            "PKU-Alignment/beaver-7b-v1.0-cost": out["cost"],
            "RLHFlow/ArmoRM-Llama3-8B-v0.1": out["armorm"],
        },
    )
    return out
