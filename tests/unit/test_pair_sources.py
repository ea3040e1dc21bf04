"""Training pairs without Ray: reading and validating pairs files (parquet with its objective names, jsonl, chat
pairs), a stage's default pairs (its sampling output) and a mixed stage's datasets in order."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rcs_ray.config import DataConfig, load_config
from rcs_ray.data.pairs import read_pairs
from rcs_ray.data.sampling_files import pairs_schema
from rcs_ray.errors import RcsInputError
from tests.fixtures_data import scored_pair_rows

pytestmark = pytest.mark.unit


def write(path, items):
    pq.write_table(pa.Table.from_pylist(items), path)
    return str(path)


def one_line(fn, *match):
    with pytest.raises(RcsInputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(m in msg for m in match), msg
    return msg


# ----------------------------------------------------------------------------------------------- reading
def test_pairs_parquet_names_its_objectives_in_its_metadata(tmp_path):
    items = scored_pair_rows()
    schema = pairs_schema(False, ["harmless", "helpful", "concise"], "helpful")
    table = pa.Table.from_pylist(items, schema=pa.schema([schema.field(c) for c in items[0]], metadata=schema.metadata))
    pq.write_table(table, tmp_path / "pairs.parquet")
    # a neighbouring stats.json is not where the names come from
    (tmp_path / "stats.json").write_text(json.dumps({"objectives": ["x", "y", "z"]}))
    p = read_pairs(str(tmp_path / "pairs.parquet"))
    assert len(p.rows) == 4 and p.target == "helpful" and not p.has_ref_logps
    assert p.reward_names == ["harmless", "helpful", "concise"]
    assert p.rows[0]["chosen_rewards"] == [1.0, 2.0, 0.5]
    # without metadata: generic names
    assert read_pairs(write(tmp_path / "plain.parquet", items)).reward_names == [
        "objective_0",
        "objective_1",
        "objective_2",
    ]


def test_a_sampled_empty_response_is_a_pair_a_datasets_is_refused(tmp_path):
    # a policy that ends at once samples "": the pipeline may select it (RSDPO's least helpful candidate), and its own
    # pairs.parquet must train; the same row in a file the pipeline did not write is bad input
    items = scored_pair_rows()
    items[1]["rejected"] = ""
    schema = pairs_schema(False, ["harmless", "helpful", "concise"], "helpful")
    table = pa.Table.from_pylist(items, schema=pa.schema([schema.field(c) for c in items[0]], metadata=schema.metadata))
    pq.write_table(table, tmp_path / "pairs.parquet")
    assert read_pairs(str(tmp_path / "pairs.parquet")).rows[1]["rejected"] == ""
    one_line(lambda: read_pairs(write(tmp_path / "plain.parquet", items)), "row 2", "field 'rejected': empty rejected")
    items[1]["prompt"] = " "
    pq.write_table(pa.Table.from_pylist(items, schema=table.schema), tmp_path / "pairs.parquet")
    one_line(lambda: read_pairs(str(tmp_path / "pairs.parquet")), "row 2", "empty prompt")


def test_jsonl_chat_pairs_and_generic_names(tmp_path):
    path = tmp_path / "pairs.jsonl"
    chat = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go"}],
        "chosen_rewards": [1, 2],
        "rejected_rewards": [0, 1],
        "ref_chosen_logps": -3.0,
        "ref_rejected_logps": -4.0,
    }
    path.write_text(json.dumps(chat) + "\n\n" + json.dumps(chat) + "\n")
    p = read_pairs(str(path), target="objective_1")
    assert p.has_ref_logps and p.reward_names == ["objective_0", "objective_1"] and p.target == "objective_1"
    assert p.rows[1]["prompt"] == [{"role": "user", "content": "hi"}] and p.rows[0]["ref_chosen_logps"] == -3.0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r.pop("rejected"), ("missing column", "rejected")),
        (lambda r: r.pop("rejected_rewards"), ("chosen_rewards", "without", "rejected_rewards")),
        (lambda r: r.update(chosen=""), ("row 1", "field 'chosen'", "empty")),
        (lambda r: r.update(prompt=3), ("row 1", "field 'prompt'", "int")),
    ],
)
def test_malformed_pairs_files(tmp_path, mutate, match):
    items = scored_pair_rows()
    for r in items:
        mutate(r)
    one_line(lambda: read_pairs(write(tmp_path / "bad.parquet", items)), *match)


def test_nan_values_are_rejected(tmp_path):
    items = [{**r, "ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0} for r in scored_pair_rows()]
    items[2]["ref_rejected_logps"] = float("nan")
    one_line(lambda: read_pairs(write(tmp_path / "a.parquet", items)), "row 3", "ref_rejected_logps", "nan")
    items = scored_pair_rows()
    items[1]["chosen_rewards"] = [1.0, float("inf"), 0.0]
    one_line(lambda: read_pairs(write(tmp_path / "b.parquet", items)), "row 2", "chosen_rewards", "must be finite")
    items = scored_pair_rows()
    items[3]["rejected_rewards"] = [1.0]
    one_line(lambda: read_pairs(write(tmp_path / "c.parquet", items)), "row 4", "expected 3 scores, got 1")


def test_missing_file_wrong_names_and_several_targets(tmp_path):
    one_line(lambda: read_pairs(str(tmp_path / "none.parquet")), "not found")
    path = write(tmp_path / "pairs.parquet", scored_pair_rows())
    one_line(lambda: read_pairs(path, reward_names=["a", "b"]), "3 objectives", "2 names")
    items = scored_pair_rows()
    items[0]["target"] = "harmless"
    one_line(lambda: read_pairs(write(tmp_path / "t.parquet", items)), "several objectives")


def test_pairs_candidates_and_data_files_share_one_reader_and_its_errors(tmp_path):
    from rcs_ray.data.file_rows import read_table
    from rcs_ray.sampling.select import _read_candidates

    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n')
    assert one_line(lambda: read_pairs(str(jl)), "invalid JSON").startswith(f"{jl}:2: invalid JSON: ")
    jl.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n"text"\n')
    one_line(lambda: read_pairs(str(jl)), f"{jl}:2: ", "expected a JSON object, got str")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    for read in (read_pairs, _read_candidates, read_table):
        assert one_line(lambda read=read: read(str(bad))).startswith(f"{bad}: not a readable parquet file: ")


def test_a_pairs_file_may_name_its_rewards_as_a_dataset_does(tmp_path):
    # chosen_scores / rejected_scores (a dataset's names) are read as chosen_rewards / rejected_rewards
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_scores": [1, 2], "rejected_scores": [0, 1]}]
    pairs = read_pairs(str(fx_jsonl(tmp_path / "s.jsonl", rows)), reward_names=["harmless", "helpful"])
    assert pairs.reward_names == ["harmless", "helpful"]
    assert pairs.rows[0]["chosen_rewards"] == [1.0, 2.0] and pairs.rows[0]["rejected_rewards"] == [0.0, 1.0]
    rows[0]["chosen_scores"] = [1, float("nan")]
    one_line(lambda: read_pairs(str(fx_jsonl(tmp_path / "n.jsonl", rows))), "row 1", "field 'chosen_scores'")
    del rows[0]["rejected_scores"]
    one_line(lambda: read_pairs(str(fx_jsonl(tmp_path / "o.jsonl", rows))), "'chosen_scores' without")


def fx_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stage_data_through_read_preferences(tmp_path):
    path = tmp_path / "d1.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"prompt": f"q{i}", "chosen": "a", "rejected": "b", "chosen_scores": [1, 0], "rejected_scores": [0, 1]}
            )
            + "\n"
            for i in range(3)
        )
    )
    from rcs_ray.data import read_preferences
    from rcs_ray.data.pairs import pairs_from_preferences

    pref = read_preferences(DataConfig(path=str(path), score_names=["harmless", "helpful"]))
    p = pairs_from_preferences(pref.rows, pref.objectives, pref.source, target="harmless")
    assert len(p.rows) == 3 and p.reward_names == ["harmless", "helpful"] and p.target == "harmless"
    assert p.rows[0]["chosen_rewards"] == [1.0, 0.0] and p.rows[0]["rejected_rewards"] == [0.0, 1.0]


def test_trainer_pairs_default_for_a_sampling_stage_is_its_sampling_output(tmp_path):
    from rcs_ray.train.sources import stage_pairs

    cfg = load_config(
        os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny", "k2.yaml"), [f"output_dir={tmp_path}"]
    )
    one_line(lambda: stage_pairs(cfg, 1, None), "stage 2", "rcs-ray sample", "--pairs")
    os.makedirs(tmp_path / "stage2" / "sampling")
    items = [{k: v for k, v in r.items() if k != "target"} for r in scored_pair_rows()]
    for r in items:
        r["chosen_rewards"], r["rejected_rewards"] = r["chosen_rewards"][:2], r["rejected_rewards"][:2]
    write(tmp_path / "stage2" / "sampling" / "pairs.parquet", items)
    p = stage_pairs(cfg, 1, None)
    assert p.reward_names == ["harmless", "helpful"] and p.target == "helpful"  # names from the config


# ----------------------------------------------------------------------------------------------- mixed stages
def _pref_file(path, rows, scores):
    with open(path, "w") as fh:
        for (p, c, r), (cs, rs) in zip(rows, scores):
            fh.write(
                json.dumps({"prompt": p, "chosen": c, "rejected": r, "chosen_scores": cs, "rejected_scores": rs}) + "\n"
            )
    return str(path)


def _mixed_config(tmp_path, loss="dpo", sample=False):
    d2 = _pref_file(tmp_path / "d2.jsonl", [("p1", "a", "b"), ("p2", "c", "d")], [([0, 2], [0, 1])] * 2)
    d1 = _pref_file(tmp_path / "d1.jsonl", [("p3", "e", "f")], [([1, 0], [0, 0])])
    cfg = {
        "objectives": [
            {"name": "harmless", "kind": "rule", "function": "m:f"},
            {"name": "helpful", "kind": "rule", "function": "m:g"},
        ],
        "stages": [{"objective": "helpful", "sample": sample, "data": {"path": d2}, "mix": [{"path": d1}]}],
        "train": {"loss": loss},
    }
    (tmp_path / "mixed.yaml").write_text(json.dumps(cfg))
    return load_config(str(tmp_path / "mixed.yaml"))


def test_mixed_stage_trains_on_every_dataset_in_order(tmp_path):
    from rcs_ray.train.sources import stage_pairs

    pairs = stage_pairs(_mixed_config(tmp_path), 0, None)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in pairs.rows] == [
        ("p1", "a", "b"),
        ("p2", "c", "d"),
        ("p3", "e", "f"),
    ]
    assert pairs.reward_names == ["harmless", "helpful"]
    assert pairs.rows[2]["chosen_rewards"] == [1.0, 0.0]
    assert "d1.jsonl" in pairs.source and "d2.jsonl" in pairs.source


@pytest.mark.parametrize("loss,sample,match", [("modpo", False, "loss dpo"), ("dpo", True, "sample: false")])
def test_mixed_stage_needs_dpo_and_no_sampling(tmp_path, loss, sample, match):
    with pytest.raises(RcsInputError, match=match):
        _mixed_config(tmp_path, loss=loss, sample=sample)
