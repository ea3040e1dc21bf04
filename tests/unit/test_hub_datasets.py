"""Hub datasets are read with ``datasets.load_dataset`` in the config and split the data config names (and its
``data_files``), from a dataset repository in an HF cache built in ``tmp_path``: a PKU-SafeRLHF-shaped repository
whose README front matter declares ``configs:`` with data files per split (:mod:`tests.fixtures_hub`). Offline,
nothing downloaded. ``huggingface_hub`` resolves the ID to the snapshot directory; ``load_dataset`` reads that
directory (``datasets`` itself finds nothing in the hub cache offline)."""

import os

import pytest

from rcs_ray.config import DataConfig, load_config
from rcs_ray.data import read_preferences, read_prompts
from rcs_ray.errors import RcsInputError
from rcs_ray.user_paths import resolve_data
from tests import fixtures_hub as fh

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def pku(tmp_path, monkeypatch):
    """The repository's snapshot directory, and every ``load_dataset`` call made (path and keyword arguments)."""
    import datasets

    snap = fh.pku_saferlhf_repo(fh.use_cache(tmp_path, monkeypatch))
    calls = []
    real = datasets.load_dataset

    def spy(path, *args, **kwargs):
        calls.append((path, {k: kwargs.get(k) for k in ("name", "split", "data_files")}))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return snap, calls


def prompts_of(**kwargs):
    data = read_preferences(DataConfig(preset="pku_saferlhf", objective="harmless", **kwargs))
    return [row["prompt"].rsplit(" ", 1)[1] for row in data.rows]


def tags(config, split):
    return [f"[{config}/{split}]"] * fh.PKU_SIZES[split]


@pytest.mark.parametrize("path", [f"hf://{fh.PKU}", fh.PKU])
def test_the_config_and_split_named_are_read_through_load_dataset(pku, path):
    snap, calls = pku
    assert prompts_of(path=path, config_name="alpaca2-7b", split="test") == tags("alpaca2-7b", "test")
    assert calls == [(snap, {"name": "alpaca2-7b", "split": "test", "data_files": None})]
    both = tags("alpaca-7b", "train") + tags("alpaca2-7b", "train")
    assert prompts_of(path=path) == both  # default config, train split
    assert prompts_of(path=path, config_name="alpaca-7b", split="test[:2]") == tags("alpaca-7b", "test")[:2]


def test_data_files_choose_files_and_name_splits(pku):
    snap, calls = pku
    files = {"dev": "data/Alpaca2-7B/test.jsonl", "train": ["data/Alpaca-7B/train.jsonl"]}
    assert prompts_of(path=f"hf://{fh.PKU}", data_files=files, split="dev") == tags("alpaca2-7b", "test")
    assert calls[-1] == (snap, {"name": None, "split": "dev", "data_files": files})
    assert prompts_of(path=f"hf://{fh.PKU}", data_files="data/*/test.jsonl") == tags("alpaca-7b", "test") + tags(
        "alpaca2-7b", "test"
    )


def test_a_resolved_dataset_reads_the_same_and_names_rows_by_the_hub(pku):
    snap, calls = pku
    data = resolve_data(
        DataConfig(path=f"hf://{fh.PKU}@{fh.commit_of(fh.PKU)}", config_name="alpaca-7b"), key="stages.0.data.path"
    )
    assert data.path == snap
    rows = read_prompts(data).rows
    assert [r["prompt"].rsplit(" ", 1)[1] for r in rows] == tags("alpaca-7b", "train")
    assert calls[-1][0] == snap
    with pytest.raises(RcsInputError) as info:  # a preset's row error names the Hub dataset, config, split
        read_preferences(
            DataConfig(
                path=f"hf://{fh.PKU}",
                preset="pku_saferlhf",
                config_name="alpaca-7b",
                columns={"safer_response_id": "prompt_source"},
            )
        )
    assert str(info.value).startswith(f"hf://{fh.PKU} (alpaca-7b, train): row 1: ")


def test_hub_dataset_errors_are_one_line(pku):
    def error(**kwargs):
        with pytest.raises(RcsInputError) as info:
            read_preferences(DataConfig(path=f"hf://{fh.PKU}", preset="pku_saferlhf", **kwargs))
        assert "\n" not in str(info.value)
        return str(info.value)

    assert error(config_name="gamma") == (
        f"hf://{fh.PKU}: BuilderConfig 'gamma' not found. Available: ['default', 'alpaca-7b', 'alpaca2-7b']"
    )
    assert error(split="validation") == f"hf://{fh.PKU}: split 'validation' not found; splits: train, test"
    assert error(data_files="nope/*.jsonl").startswith(f"hf://{fh.PKU}: No (supported) data files found in ")
    assert error(format="jsonl") == (
        f"hf://{fh.PKU}: format 'jsonl': a Hub dataset is read by "
        f"datasets.load_dataset from its own files; leave format auto"
    )


def test_local_files_keep_their_reader(pku, tmp_path):
    snap, calls = pku
    local = os.path.join(snap, "data", "Alpaca-7B", "train.jsonl")
    assert len(read_preferences(DataConfig(path=local, preset="pku_saferlhf")).rows) == fh.PKU_SIZES["train"]
    assert calls == []
    with pytest.raises(RcsInputError, match=r"^.*train\.jsonl: config_name is only for a Hub dataset"):
        read_preferences(DataConfig(path=local, preset="pku_saferlhf", config_name="alpaca-7b"))


# ----------------------------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    "overrides, key, message",
    [
        (
            ["stages.0.data.path=./d.jsonl", "stages.0.data.config_name=x"],
            "stages.0.data.config_name",
            "only for a Hub dataset (hf://org/name[@revision]); ./d.jsonl is read as a local path or URI",
        ),
        (
            ["stages.0.data.path=s3://b/d", "stages.0.data.data_files=x.jsonl"],
            "stages.0.data.data_files",
            "only for a Hub dataset (hf://org/name[@revision]); s3://b/d is read as a local path or URI",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.config_name=''"],
            "stages.0.data.config_name",
            "must be a configuration name, got ''",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.data_files={train: []}"],
            "stages.0.data.data_files",
            "a mapping needs split names to files (globs) or lists of them, got {'train': []}",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.data_files={a: x, b: y}", "stages.0.data.split=c"],
            "stages.0.data.split",
            "'c' is not a split of data_files (a, b)",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.data_files={a: x, b: y}"],
            "stages.0.data.split",
            "data_files has no 'train' split: set split to one of a, b",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.data_files=[x, y]", "stages.0.data.split=test"],
            "stages.0.data.split",
            "'test': data_files given as files make one split, 'train'; name the split with data_files: {test: [...]}",
        ),
        (
            ["stages.0.data.path=hf://o/d", "stages.0.data.format=jsonl"],
            "stages.0.data.format",
            "'jsonl': a Hub dataset is read by datasets.load_dataset from its own files; leave format auto",
        ),
        (
            ["eval.prompts.path=hf://just-a-name"],
            "eval.prompts.path",
            "hf://just-a-name: not a Hub repository; write hf://org/name or hf://org/name@revision",
        ),
    ],
)
def test_hub_data_fields_are_checked_with_the_config(overrides, key, message):
    with pytest.raises(RcsInputError) as info:
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides)
    assert str(info.value).endswith(f"key '{key}': {message}")


def test_valid_hub_data_fields_load():
    cfg = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            f"stages.0.data.path=hf://{fh.PKU}@main",
            "stages.0.data.config_name=alpaca-7b",
            "stages.1.data.path=org/data",
            "stages.1.data.data_files={dev: [a.jsonl, b.jsonl]}",
            "stages.1.data.split=dev",
        ],
    )
    assert cfg.stages[0].data.config_name == "alpaca-7b"
    assert cfg.stages[1].data.data_files == {"dev": ["a.jsonl", "b.jsonl"]}
