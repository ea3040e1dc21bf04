"""Remote storage through pyarrow filesystems, tested on ``file://`` URIs and local paths: reading every data format,
local copies of model directories (cache reuse, re-download on change), uploads, staged outputs, fingerprints and
the one-line errors."""

import gzip
import json
import os

import pytest

from rcs_ray import storage
from rcs_ray.config import DataConfig
from rcs_ray.data import read_preferences, read_table
from rcs_ray.errors import RcsInputError
from rcs_ray.storage import files, mirror
from tests import fixtures_data as fx

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(storage.CACHE_ENV, str(root))
    return root


def uri(path) -> str:
    return "file://" + os.path.abspath(str(path))


def test_names():
    assert storage.is_uri("s3://b/k") and storage.is_uri("file:///tmp") and storage.is_uri("gs://b")
    assert not storage.is_uri("tinyworld:policy") and not storage.is_uri("/tmp/x") and not storage.is_uri("")
    assert storage.join("s3://b/run/", "stage1", "manifest.json") == "s3://b/run/stage1/manifest.json"
    assert storage.join("s3://b/run?endpoint_override=h:9000", "x") == "s3://b/run/x?endpoint_override=h:9000"
    assert storage.join("out", "stage1") == os.path.join("out", "stage1")
    assert storage.parent("gs://b/run/stage1/pairs.parquet") == "gs://b/run/stage1"
    assert storage.absolute("s3://b/x") == "s3://b/x" and storage.absolute("x") == os.path.abspath("x")


# ----------------------------------------------------------------------------------------------- reading data
@pytest.mark.parametrize("fmt", fx.FORMATS)
def test_every_format_reads_the_same_from_a_file_uri(tmp_path, fmt):
    path = fx.write_rows(tmp_path, fx.plain_pairs(), fmt)
    local = read_preferences(DataConfig(path=str(path)))
    remote = read_preferences(DataConfig(path=uri(path)))
    assert remote.rows == local.rows and remote.objectives == local.objectives
    assert remote.source == uri(path)


def test_gzip_jsonl_a_directory_of_shards_and_a_dataset_dict_from_uris(tmp_path):
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in fx.plain_pairs())
    assert read_table(uri(gz)) == fx.plain_pairs()
    rows = fx.plain_pairs()
    snap = fx.write_snapshot(tmp_path, {"train": [rows[:2], rows[2:]], "test": [rows[:1]]})
    assert read_table(uri(snap)) == rows  # hidden .git and meta/*.json skipped
    assert read_table(uri(snap), split="test") == rows[:1]
    hf = fx.write_hf_dir(tmp_path / "hfdict", {"train": rows, "test": rows[:1]})
    assert read_table(uri(hf), split="test") == rows[:1]


def test_bad_rows_and_missing_paths_are_named_by_uri(tmp_path):
    bad = fx.write_lines(tmp_path / "bad.jsonl", ['{"prompt": "p", "chosen": "a", "rejected": "b"}', "{oops"])
    with pytest.raises(RcsInputError, match=rf"^{uri(bad)}:2: invalid JSON"):
        read_preferences(DataConfig(path=uri(bad)))
    with pytest.raises(RcsInputError, match=r"nope\.jsonl: no such file or directory$"):
        read_table(uri(tmp_path / "nope.jsonl"))


def test_pairs_file_and_its_objective_names_from_a_uri(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rcs_ray.data.pairs import read_pairs as read_pairs_file
    from rcs_ray.data.sampling_files import pairs_schema

    rows = [
        {
            "prompt": "p",
            "chosen": "a",
            "rejected": "b",
            "chosen_rewards": [1.0, 2.0],
            "rejected_rewards": [0.0, 1.0],
            "target": "helpful",
        }
    ]
    os.makedirs(tmp_path / "s")
    path = tmp_path / "s" / "pairs.parquet"
    meta = pairs_schema(False, ["harmless", "helpful"], "helpful").metadata
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata(meta), path)
    pairs = read_pairs_file(uri(path))
    assert pairs.reward_names == ["harmless", "helpful"] and pairs.rows[0]["chosen"] == "a"
    jl = fx.write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert read_pairs_file(uri(jl)).rows == [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    with pytest.raises(RcsInputError, match="pairs file not found: file://"):
        read_pairs_file(uri(tmp_path / "missing.parquet"))


# ----------------------------------------------------------------------------------------------- local copies
def make_model(root, weights=b"w" * 10):
    os.makedirs(root / "sub", exist_ok=True)
    (root / "config.json").write_text('{"vocab_size": 5}')
    (root / "model.safetensors").write_bytes(weights)
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_local_copy_downloads_once_and_again_when_the_listing_changes(tmp_path, cache, monkeypatch):
    src = make_model(tmp_path / "model")
    calls = []
    real = mirror.download
    monkeypatch.setattr(mirror, "download", lambda u, p: (calls.append(u), real(u, p)))
    first = storage.local_copy(uri(src))
    assert first.startswith(str(cache)) and calls == [uri(src)]
    assert open(os.path.join(first, "sub", "tokenizer.json")).read() == "{}"
    assert storage.local_copy(uri(src) + "/") == first and len(calls) == 1  # cached: no download
    (src / "model.safetensors").write_bytes(b"w" * 11)  # size changes: fetched again
    assert storage.local_copy(uri(src)) == first and len(calls) == 2
    assert open(os.path.join(first, "model.safetensors"), "rb").read() == b"w" * 11
    os.remove(src / "sub" / "tokenizer.json")  # a file goes: fetched again
    storage.local_copy(uri(src))
    assert len(calls) == 3 and not os.path.exists(os.path.join(first, "sub", "tokenizer.json"))
    assert storage.local_copy(str(src)) == str(src)  # local paths as they are


def test_local_copy_without_weights_and_of_a_single_file(tmp_path):
    src = make_model(tmp_path / "model")
    meta = storage.local_copy(uri(src), weights=False)
    assert sorted(os.listdir(meta)) == ["config.json", "sub"]
    single = storage.local_copy(uri(src / "config.json"))
    assert os.path.basename(single) == "config.json" and json.load(open(single)) == {"vocab_size": 5}


def test_model_uris_are_checked_and_kept_as_uris(tmp_path):
    from rcs_ray.user_paths import resolve_model_dir

    src = make_model(tmp_path / "model")
    assert resolve_model_dir(uri(src) + "/", "policy.path") == uri(src)
    with pytest.raises(RcsInputError, match=rf"^policy\.path: model directory not found: {uri(tmp_path)}/nope$"):
        resolve_model_dir(uri(tmp_path / "nope"), "policy.path")
    with pytest.raises(RcsInputError, match=r"^objectives\.0\.model: model directory not found: .*config\.json$"):
        resolve_model_dir(uri(src / "config.json"), "objectives.0.model")


# ----------------------------------------------------------------------------------------------- writing
def test_upload_replaces_files_and_directories(tmp_path):
    src = make_model(tmp_path / "model")
    dst = uri(tmp_path / "remote" / "run" / "model")
    storage.upload(str(src), dst)
    assert [f[0] for f in storage.list_files(dst)] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    os.remove(src / "sub" / "tokenizer.json")
    storage.upload(str(src), dst)  # stale files do not survive a re-upload
    assert [f[0] for f in storage.list_files(dst)] == ["config.json", "model.safetensors"]
    storage.upload(str(src / "config.json"), dst + "/config.json")
    storage.write_text(uri(tmp_path / "remote" / "run" / "note.txt"), "hello")
    assert storage.read_text(uri(tmp_path / "remote" / "run" / "note.txt")) == "hello"
    assert not [n for n in os.listdir(tmp_path / "remote" / "run") if ".tmp-" in n]


def test_staged_dir_pushes_and_pulls_only_what_changed(tmp_path, monkeypatch):
    home = uri(tmp_path / "remote" / "train")
    staged = storage.StagedDir(home)
    assert staged.remote and staged.local != home and staged.path("a.json") == home + "/a.json"
    os.makedirs(staged.local)
    open(os.path.join(staged.local, "a.json"), "w").write("1")
    make_model(tmp_path / "m")
    os.rename(tmp_path / "m", os.path.join(staged.local, "model"))
    uploads = []
    real = mirror.upload
    monkeypatch.setattr(mirror, "upload", lambda p, u: (uploads.append(u), real(p, u)))
    staged.push("a.json", "model", "missing", cache=True)
    assert uploads == [home + "/a.json", home + "/model"] and storage.read_text(home + "/a.json") == "1"
    assert os.path.isdir(os.path.join(storage.cache_root(), "remote"))  # the model's cache entry was seeded
    staged.push("a.json", "model")
    assert len(uploads) == 2  # unchanged: not uploaded again
    other = storage.StagedDir(home)  # e.g. a rerun on another machine
    import shutil

    shutil.rmtree(other.local)
    other.pull("a.json", "model", "b.json")
    assert open(os.path.join(other.local, "a.json")).read() == "1"
    assert sorted(os.listdir(os.path.join(other.local, "model"))) == ["config.json", "model.safetensors", "sub"]
    local = storage.StagedDir(str(tmp_path / "plain"))
    assert not local.remote and local.local == str(tmp_path / "plain")


def test_a_seeded_cache_entry_is_reused_without_download(tmp_path, monkeypatch):
    src = make_model(tmp_path / "model")
    dst = uri(tmp_path / "remote" / "model")
    storage.upload(str(src), dst)
    storage.seed_cache(str(src), dst)
    monkeypatch.setattr(mirror, "download", lambda *a: pytest.fail("downloaded a seeded entry"))
    assert os.path.isfile(os.path.join(storage.local_copy(dst), "model.safetensors"))


def test_workflow_fingerprints_of_uris_follow_the_listing(tmp_path):
    from rcs_ray.workflow import fingerprint

    src = make_model(tmp_path / "model")
    before = fingerprint(uri(src))
    assert fingerprint(uri(src)) == before
    (src / "config.json").write_text('{"vocab_size": 55}')
    assert fingerprint(uri(src)) != before
    with pytest.raises(RcsInputError, match=r"^stages\.1\.data\.path: input not found: file://.*nope\.jsonl$"):
        fingerprint(uri(tmp_path / "nope.jsonl"), "stages.1.data.path")


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_scheme_and_missing_filesystem_support_are_one_line(tmp_path, monkeypatch):
    import pyarrow.lib

    from rcs_ray.user_paths import resolve_data

    with pytest.raises(RcsInputError) as info:
        resolve_data(DataConfig(path="foo://bucket/d.jsonl"), key="stages.0.data.path")
    assert str(info.value) == (
        "stages.0.data.path: unsupported storage scheme 'foo://' in foo://bucket/d.jsonl: "
        "pyarrow filesystems know file://, s3://, gs:// (gcs://) and hdfs://"
    )

    def no_s3(u):
        raise pyarrow.lib.ArrowNotImplementedError("Got S3 URI but Arrow compiled without S3 support")

    monkeypatch.setattr(files, "_from_uri", no_s3)
    with pytest.raises(RcsInputError) as info:
        storage.require("s3://bucket/policy", "policy.path", "model directory")
    msg = str(info.value)
    assert msg.startswith("policy.path: s3://bucket/policy: this pyarrow was built without s3:// support")
    assert "\n" not in msg

    def unreachable(u):
        raise OSError("When resolving region for bucket 'b': AWS Error NETWORK_CONNECTION\nmore detail")

    monkeypatch.setattr(files, "_from_uri", unreachable)
    with pytest.raises(
        RcsInputError,
        match=r"^output_dir: s3://b/run: cannot open the s3:// filesystem: When "
        r"resolving region for bucket 'b': AWS Error NETWORK_CONNECTION$",
    ):
        storage.StagedDir("s3://b/run", key="output_dir")


def test_cli_prints_the_error_line(tmp_path, capsys):
    from rcs_ray.cli import main

    assert main(["analyze", uri(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {uri(tmp_path / 'missing.jsonl')}: no such file or directory"


def test_reports_and_eval_outputs_land_at_a_uri(tmp_path, monkeypatch):
    import numpy as np

    import rcs_ray.evaluate as ev
    import rcs_ray.ray_runtime
    from rcs_ray.config import load_config
    from rcs_ray.dataset_analysis import analyze_dataset

    data = fx.write_jsonl(tmp_path / "d.jsonl", fx.plain_pairs())
    res = analyze_dataset(DataConfig(path=uri(data)), out_dir=uri(tmp_path / "bucket" / "analysis"))
    assert res.paths.markdown == uri(tmp_path / "bucket" / "analysis") + "/rc_report.md"
    assert sorted(os.listdir(tmp_path / "bucket" / "analysis")) == [
        "rc_analysis.json",
        "rc_analysis.png",
        "rc_report.md",
    ]

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(
        os.path.join(repo, "configs/tiny/k2.yaml"),
        [f"output_dir={uri(tmp_path / 'bucket' / 'run')}", f"eval.prompts.path={uri(data)}", "eval.n=2"],
    )
    monkeypatch.setattr(rcs_ray.ray_runtime, "init_ray", lambda *a, **k: None)
    import rcs_ray.sampling.job

    monkeypatch.setattr(rcs_ray.sampling.job, "eval_job", lambda cfg, path: path)  # no models: fake policies
    monkeypatch.setattr(ev, "policy_rewards", lambda job, rows, chat, n, progress, desc: np.zeros((len(rows), n, 2)))
    result = ev.evaluate(cfg, {"base": "b", "tuned": "t"}, reference="base")
    assert result.markdown == uri(tmp_path / "bucket" / "run") + "/eval/eval.md"
    assert "| tuned |" in storage.read_text(result.markdown)
    assert sorted(os.listdir(tmp_path / "bucket" / "run" / "eval")) == ["eval.json", "eval.md", "eval.png"]
    with pytest.raises(RcsInputError, match=r"^eval\.prompts\.path: input not found: file://.*nope\.jsonl$"):
        ev.evaluate(
            load_config(
                os.path.join(repo, "configs/tiny/k2.yaml"), [f"eval.prompts.path={uri(tmp_path / 'nope.jsonl')}"]
            ),
            {"base": "b"},
        )
