"""The one model loader: the checked load refuses a checkpoint that would leave weights random (naming the path and
the missing keys), every ``vllm.LLM`` gets the same arguments, the one device choice, and the one context-limit rule
that the HF engine, the scorers and the judges share (one case per source of the limit)."""

import os
from types import SimpleNamespace

import pytest

from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.context import DEFAULT_CONTEXT, context_limit, saved_tokenizer_limit, tokenizer_limit
from rcs_ray.modeling.devices import device_for, has_cuda
from rcs_ray.modeling.vllm_llm import llm_kwargs

pytestmark = pytest.mark.unit

SENTINEL = int(1e30)  # transformers' model_max_length for a tokenizer that names no limit


def _tiny_config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        **kw,
    )


def _saved_llama(path, drop=()):
    """A tiny Llama saved at ``path``; ``drop``: tensor names deleted from its safetensors file afterwards."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_config(max_position_embeddings=64)).save_pretrained(path)
    if drop:
        name = os.path.join(path, "model.safetensors")
        tensors = {k: v for k, v in load_file(name).items() if k not in drop}
        save_file(tensors, name, metadata={"format": "pt"})
    return str(path)


# ----------------------------------------------------------------------------------------------- the checked load
def test_checked_load_refuses_a_missing_weight_naming_the_path_and_the_key(tmp_path):
    from rcs_ray.modeling.loading import load_causal_lm

    path = _saved_llama(tmp_path / "m", drop=("model.layers.0.mlp.up_proj.weight",))
    with pytest.raises(RcsInputError) as err:
        load_causal_lm(path, what="policy.path")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"policy.path: {path} loaded with random weights for ")
    assert "model.layers.0.mlp.up_proj.weight" in msg


def test_checked_load_refuses_another_architecture(tmp_path):
    """A causal LM read as a sequence classifier: its ``score`` head is not in the checkpoint."""
    from transformers import AutoModelForSequenceClassification

    from rcs_ray.modeling.loading import load_checked

    path = _saved_llama(tmp_path / "m")
    with pytest.raises(RcsInputError, match=r"objectives\.0\.model: .* random weights for score\.weight.*: check"):
        load_checked(AutoModelForSequenceClassification, path, "objectives.0.model", "check objectives.0.output")


def test_checked_load_passes_a_complete_checkpoint(tmp_path):
    from rcs_ray.modeling.loading import load_causal_lm

    model = load_causal_lm(_saved_llama(tmp_path / "m"))
    assert not model.training and model.config.max_position_embeddings == 64


def test_the_trainer_refuses_random_weights_as_an_input_error(tmp_path):
    """The training worker's load is the same checked load: an input error (the driver unwraps it from Ray Train)."""
    from rcs_ray.config import TrainConfig
    from rcs_ray.train.deepspeed_engine import load_policy

    path = _saved_llama(tmp_path / "m", drop=("model.norm.weight",))
    with pytest.raises(RcsInputError, match="policy.path: .* random weights for model.norm.weight"):
        load_policy(path, TrainConfig(), {})


def test_an_input_error_is_found_inside_rays_wrappers_as_itself():
    from ray.exceptions import RayTaskError

    from rcs_ray.errors import input_error_in

    wrong = RcsInputError("policy.path: x loaded with random weights for y")
    wrapped = SimpleNamespace(_base_exc=wrong, __cause__=None)
    failed = RuntimeError("training failed")  # Ray Train: the workers' errors, each wrapped with its traceback
    failed.worker_failures = {0: RuntimeError("other"), 1: wrapped}
    assert input_error_in(failed) is wrong
    assert input_error_in(RuntimeError("other")) is None
    # an actor's error: Ray's wrapper is itself an RcsInputError (a derived class) whose message is the traceback
    actor = RayTaskError("Host.ready", "Traceback (most recent call last):\n...\nRcsInputError: m", wrong)
    dual = actor.as_instanceof_cause()
    assert isinstance(dual, RcsInputError) and "\n" in str(dual)
    assert input_error_in(dual) is wrong and input_error_in(actor) is wrong
    assert input_error_in(RayTaskError("Host.ready", "Traceback", ValueError("v")).as_instanceof_cause()) is None


# ----------------------------------------------------------------------------------------------- vllm.LLM arguments
def test_llm_kwargs_share_the_settings_and_engine_kwargs_win():
    cpu = llm_kwargs("/m", dtype="float32", trust_remote_code=True, max_model_len=512, cuda=False, seed=3)
    assert cpu == dict(
        model="/m",
        tokenizer="/m",
        dtype="float32",
        trust_remote_code=True,
        max_model_len=512,
        tensor_parallel_size=1,
        seed=3,
        enforce_eager=True,
    )
    gpu = llm_kwargs(
        "/m",
        dtype="bfloat16",
        trust_remote_code=False,
        max_model_len=512,
        cuda=True,
        tokenizer="/t",
        tensor_parallel_size=2,
        extra={"runner": "pooling"},
        engine_kwargs={"max_model_len": 128, "enforce_eager": False},
    )
    assert gpu == dict(
        model="/m",
        tokenizer="/t",
        dtype="bfloat16",
        trust_remote_code=False,
        max_model_len=128,
        tensor_parallel_size=2,
        distributed_executor_backend="ray",
        runner="pooling",
        enforce_eager=False,
    )
    assert "seed" not in gpu


def test_vllm_gets_the_context_limit_of_the_one_rule(tmp_path):
    from rcs_ray.modeling.vllm_llm import vllm_context_limit

    path = _saved_llama(tmp_path / "m")  # max_position_embeddings 64, no tokenizer
    assert vllm_context_limit(path, None, False, None) == 64
    assert vllm_context_limit(path, None, False, 40) == 40
    (tmp_path / "m" / "tokenizer_config.json").write_text('{"model_max_length": 48}')
    assert saved_tokenizer_limit(path) == 48 and vllm_context_limit(path, path, False, None) == 48


def test_device_choice():
    assert device_for(False) == "cpu"
    assert device_for(True) == ("cuda" if has_cuda() else "cpu")


# ----------------------------------------------------------------------------------------------- the context limit
def test_context_limit_from_the_model_config():
    assert context_limit(_tiny_config(max_position_embeddings=256)) == 256
    assert context_limit(SimpleNamespace(n_positions=1024)) == 1024  # GPT-2's name for it
    assert context_limit(SimpleNamespace(max_position_embeddings=4096, seq_length=2048)) == 2048  # the smallest


def test_context_limit_ignores_the_tokenizer_sentinel_and_takes_a_smaller_tokenizer_limit():
    config = _tiny_config(max_position_embeddings=256)
    assert tokenizer_limit(SimpleNamespace(model_max_length=SENTINEL)) is None
    assert context_limit(config, tokenizer_limit(SimpleNamespace(model_max_length=SENTINEL))) == 256
    assert context_limit(config, tokenizer_limit(SimpleNamespace(model_max_length=128))) == 128
    assert context_limit(config, tokenizer_limit(SimpleNamespace(model_max_length=1024))) == 256
    assert context_limit(SimpleNamespace(), 300) == 300  # the tokenizer's alone
    assert context_limit(SimpleNamespace(), None) == DEFAULT_CONTEXT == 2048  # neither names one


def test_context_limit_explicit_setting_wins():
    assert context_limit(_tiny_config(max_position_embeddings=256), 128, setting=1000) == 1000
    assert context_limit(SimpleNamespace(), None, setting=64) == 64


def test_every_user_takes_the_same_limit(tmp_path):
    """The HF engine, the reward-model scorer and the judge read a model's limit by the one rule."""
    from rcs_ray.config import ModelConfig, SamplingConfig
    from rcs_ray.sampling.engines import HFEngine
    from rcs_ray.tinyworld.generate import build_tokenizer

    path = _saved_llama(tmp_path / "m")
    build_tokenizer().save_pretrained(path)  # model_max_length 512 > positions 64
    engine = HFEngine(ModelConfig(path=path), SamplingConfig())
    assert engine.max_model_len == context_limit(engine.model.config, tokenizer_limit(engine.tokenizer)) == 64
    assert HFEngine(ModelConfig(path=path), SamplingConfig(vllm_max_model_len=32)).max_model_len == 32
