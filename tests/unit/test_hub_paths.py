"""One rule for a path that could be local or a Hub ID: ``hf://`` is the Hub, ``./ ../ / ~`` are local, a bare
``org/name`` is local if it exists, else the Hub, and when it is neither one line names both readings. Checked for
every model role and for datasets, against an HF cache built in ``tmp_path`` (offline, nothing downloaded)."""

import os

import pytest

from rcs_ray import storage
from rcs_ray.config import DataConfig, ObjectiveConfig, TinyWorldConfig, load_config
from rcs_ray.errors import RcsInputError
from rcs_ray.user_paths import resolve_data, resolve_model_dir
from tests import fixtures_hub as fh

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return fh.use_cache(tmp_path, monkeypatch)


def neither(key, name, kind, what):
    return (
        f"{key}: {name} is neither a local {what} (not found: {os.path.abspath(name)}) nor a {kind} in the "
        f"Hugging Face cache (HF_HUB_OFFLINE=1: not downloaded); write ./{name} or hf://{name} to say which you "
        f"mean"
    )


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(RcsInputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------------------------- bare org/name
def test_a_bare_name_that_is_neither_names_both_readings_for_every_path_of_the_paper_config(cache, monkeypatch):
    from rcs_ray.config.path_checks import model_paths

    monkeypatch.setenv("RCS_MODELS", "models")  # bare relative names: local copies or Hub IDs?
    monkeypatch.setenv("RCS_DATA", "data")
    cfg = load_config(os.path.join(REPO, "configs/paper/pku_helpsteer_k2.yaml"))
    models = [(key, path) for key, path in model_paths(cfg) if path]
    assert [key for key, _ in models] == ["policy.path", "objectives.0.model", "objectives.1.model", "eval.judge.model"]
    for key, path in models:
        assert error_of(resolve_model_dir, path, key) == neither(key, path, "model", "directory")
    assert cfg.stages[0].data.path == "data/PKU-SafeRLHF"
    for k, st in enumerate(cfg.stages):
        key = f"stages.{k}.data.path"
        assert error_of(resolve_data, st.data, key=key) == neither(key, st.data.path, "dataset", "file or directory")


# ----------------------------------------------------------------------------------------------- hf:// and ./
MODEL_KEYS = [
    "policy.path",
    "policy.tokenizer",
    "objectives.0.model",
    "objectives.0.reference",
    "objectives.0.tokenizer",
    "eval.judge.model",
    "train.spo_policies.0",
]


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_hf_forces_the_hub_even_where_a_local_directory_has_that_name(cache, key):
    """... and a bare org/name is that local directory, and the Hub once it is gone."""
    os.makedirs("org/name")  # a local org/name exists
    assert error_of(resolve_model_dir, "hf://org/name", key) == (
        f"{key}: Hub model 'hf://org/name' is not in the HF cache ({cache}) and HF_HUB_OFFLINE=1: download it "
        f"first (hf download org/name) or unset HF_HUB_OFFLINE"
    )
    snap = fh.put_model(cache, "org/name")
    assert resolve_model_dir("hf://org/name", key) == snap
    assert resolve_model_dir(f"hf://org/name@{fh.commit_of('org/name')}", key) == snap
    assert resolve_model_dir("org/name", key) == os.path.abspath("org/name")  # bare: local when it exists,
    os.rmdir("org/name")
    assert resolve_model_dir("org/name", key) == snap  # else the Hub


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_dot_slash_forces_a_local_path_even_where_the_cache_has_that_id(cache, key):
    fh.put_model(cache, "org/name")
    assert (
        error_of(resolve_model_dir, "./org/name", key)
        == f"{key}: model directory not found: {os.path.abspath('org/name')}"
    )
    os.makedirs("org/name")
    assert resolve_model_dir("./org/name", key) == os.path.abspath("org/name")


def test_home_paths_are_local_and_expanded(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    os.makedirs(tmp_path / "mine" / "policy")
    assert resolve_model_dir("~/mine/policy", "policy.path") == str(tmp_path / "mine" / "policy")
    assert (
        error_of(resolve_model_dir, "~/mine/gone", "policy.path")
        == f"policy.path: model directory not found: {tmp_path / 'mine' / 'gone'}"
    )


def test_every_objective_model_role_and_the_loaders_take_hf_names(cache):
    from rcs_ray.sampling.job import _resolve_objective

    snaps = {repo: fh.put_model(cache, repo) for repo in ("acme/policy", "acme/ref", "acme/tok", "acme/judge")}
    obj = ObjectiveConfig(
        name="h", kind="implicit", model="hf://acme/policy", reference="hf://acme/ref", tokenizer="hf://acme/tok"
    )
    got = _resolve_objective(obj, "objectives.0", TinyWorldConfig())
    assert (got.model, got.reference, got.tokenizer) == (snaps["acme/policy"], snaps["acme/ref"], snaps["acme/tok"])
    judge = _resolve_objective(
        ObjectiveConfig(name="q", kind="judge", model="hf://acme/judge"), "eval.judge", TinyWorldConfig()
    )
    assert judge.model == snaps["acme/judge"]
    with pytest.raises(RcsInputError, match=r"^objectives\.0\.reference: Hub model 'hf://acme/gone' is not in"):
        _resolve_objective(
            ObjectiveConfig(name="h", kind="implicit", model="hf://acme/policy", reference="hf://acme/gone"),
            "objectives.0",
            TinyWorldConfig(),
        )
    assert storage.local_copy("hf://acme/tok", weights=False) == snaps["acme/tok"]  # what the loaders call


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_a_malformed_hf_name_stops_the_config(key):
    overrides = {
        "policy.path": [],
        "policy.tokenizer": [],
        "eval.judge.model": ["eval.judge={name: judge, kind: judge, model: x}"],
        "train.spo_policies.0": ["train.spo_policies=[x]"],
    }.get(key, ["objectives.0.kind=implicit", "objectives.0.model=x", "objectives.0.reference=x"])
    with pytest.raises(RcsInputError) as info:
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides + [f"{key}=hf://just-a-name"])
    assert str(info.value).endswith(
        f"key '{key}': hf://just-a-name: not a Hub repository; write hf://org/name or hf://org/name@revision"
    )


# ----------------------------------------------------------------------------------------------- data paths
def test_data_paths_follow_the_same_rule(cache):
    snap = fh.pku_saferlhf_repo(cache)
    key = "stages.0.data.path"
    assert resolve_data(DataConfig(path=f"hf://{fh.PKU}"), key=key).path == snap
    assert resolve_data(DataConfig(path=fh.PKU), key=key).path == snap
    assert (
        error_of(resolve_data, DataConfig(path=f"./{fh.PKU}"), key=key)
        == f"{key}: data not found: {os.path.abspath(fh.PKU)}"
    )
    assert error_of(resolve_data, DataConfig(path="hf://PKU-Alignment/nope"), key=key).startswith(
        f"{key}: Hub dataset 'hf://PKU-Alignment/nope' is not in the HF cache ({cache}) and HF_HUB_OFFLINE=1"
    )
    os.makedirs(fh.PKU)
    assert resolve_data(DataConfig(path=fh.PKU), key=key).path == fh.PKU  # local wins
    assert resolve_data(DataConfig(path=f"hf://{fh.PKU}"), key=key).path == snap  # hf:// is the Hub


def test_hf_is_never_handed_to_pyarrow(tmp_path):
    with pytest.raises(RcsInputError, match=r"^output_dir: hf://org/run: hf:// names a Hugging Face Hub repository"):
        storage.StagedDir("hf://org/run", key="output_dir")
