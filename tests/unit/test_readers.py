"""Generic readers: formats, column map, prompt ids, bad input, skip mode, prompt lists, pure imports."""

import gzip
import hashlib
import json
import subprocess
import sys

import pytest

from rcs_ray.config import DataConfig
from rcs_ray.data import PreferenceData, prompt_hash, read_preferences, read_prompts, read_table
from rcs_ray.errors import RcsInputError
from tests import fixtures_data as fx

pytestmark = pytest.mark.unit


def expected_rows(rows, ids=None):
    """Canonical rows for fixture rows: ``prompt_id`` first, from ``ids`` or the prompt hash with suffixes."""
    out, seen = [], {}
    for i, row in enumerate(rows):
        if ids is not None:
            pid = ids[i]
        else:
            base = prompt_hash(row["prompt"])
            pid = base if base not in seen else f"{base}-{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
        out.append({"prompt_id": pid, **row})
    return out


def read(path, **kwargs):
    return read_preferences(DataConfig(path=str(path), **kwargs))


def error_of(path, **kwargs) -> str:
    with pytest.raises(RcsInputError) as info:
        read(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- formats -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", fx.FORMATS)
def test_plain_pairs_round_trip_every_format(tmp_path, fmt):
    path = fx.write_rows(tmp_path, fx.plain_pairs(), fmt)
    data = read(path)
    assert isinstance(data, PreferenceData)
    assert data.rows == expected_rows(fx.plain_pairs())
    assert data.objectives == ["objective_0", "objective_1"]
    assert data.source == str(path) and data.skipped == {}


@pytest.mark.parametrize("fmt", fx.FORMATS)
def test_chat_pairs_round_trip_every_format(tmp_path, fmt):
    path = fx.write_rows(tmp_path, fx.chat_pairs(), fmt)
    data = read(path)
    assert data.rows == expected_rows(fx.chat_pairs())
    assert data.objectives == []


def test_explicit_format_overrides_the_suffix(tmp_path):
    jsonl = fx.write_jsonl(tmp_path / "pairs.txt", fx.plain_pairs())
    parquet = fx.write_parquet(tmp_path / "pairs.bin", fx.plain_pairs())
    assert read(jsonl, format="jsonl").rows == read(parquet, format="parquet").rows
    assert read(fx.write_rows(tmp_path, fx.plain_pairs(), "hf"), format="hf").rows == read(jsonl, format="jsonl").rows
    assert "format 'hf'" in error_of(jsonl, format="hf")


def test_gzipped_json_lines(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in fx.plain_pairs())
    assert read(path).rows == expected_rows(fx.plain_pairs())


def test_snapshot_dir_reads_train_shards_in_path_order(tmp_path):
    rows = fx.plain_pairs()
    chat = fx.chat_pairs()
    root = fx.write_snapshot(
        tmp_path, {"train": [rows[:2], rows[2:]], "test": [[r | {"prompt": r["prompt"] + "?"} for r in rows[:1]]]}
    )
    assert read(root).rows == expected_rows(rows)
    assert [r["prompt"] for r in read(root, split="test").rows] == ["What is 2+2??"]
    assert "no data files for split 'dev'" in error_of(root, split="dev")
    other = fx.write_jsonl(tmp_path / "plain" / "b.jsonl", chat[1:])
    fx.write_jsonl(other.parent / "a.jsonl", chat[:1])
    assert read(other.parent).rows == expected_rows(chat)


def test_dataset_dict_splits(tmp_path):
    rows = fx.plain_pairs()
    path = fx.write_hf_dir(tmp_path / "dd", {"train": rows[:2], "test": rows[2:]})
    assert len(read(path).rows) == 2
    assert read(path, split="test").rows[0]["chosen"] == "Four."
    assert "split 'dev' not found; splits: train, test" in error_of(path, split="dev")
    no_train = fx.write_hf_dir(tmp_path / "dd2", {"a": rows, "b": rows})
    assert "no 'train' split; splits: a, b" in error_of(no_train)


def test_limit_and_read_table(tmp_path):
    path = fx.write_rows(tmp_path, fx.plain_pairs(), "parquet")
    assert [r["chosen"] for r in read(path, limit=2).rows] == ["4", "Blue."]
    assert read_table(str(path)) == fx.plain_pairs()
    assert read_table(str(fx.write_jsonl(tmp_path / "x.jsonl", fx.pku_rows())), limit=1) == fx.pku_rows()[:1]
    assert read_table(str(fx.write_rows(tmp_path, fx.chat_pairs(), "hf")), format="hf") == fx.chat_pairs()


# --- column map, scores, prompt ids --------------------------------------------------------------------------


def test_column_map(tmp_path):
    renamed = [
        {
            "id": f"q{i}",
            "question": r["prompt"],
            "good": r["chosen"],
            "bad": r["rejected"],
            "s_good": r["chosen_scores"],
            "s_bad": r["rejected_scores"],
        }
        for i, r in enumerate(fx.plain_pairs())
    ]
    path = fx.write_rows(tmp_path, renamed, "parquet")
    columns = {
        "prompt_id": "id",
        "prompt": "question",
        "chosen": "good",
        "rejected": "bad",
        "chosen_scores": "s_good",
        "rejected_scores": "s_bad",
    }
    data = read(path, columns=columns, score_names=["correct", "safe"])
    assert data.rows == expected_rows(fx.plain_pairs(), ids=["q0", "q1", "q2"])
    assert data.objectives == ["correct", "safe"]
    msg = error_of(path, columns={**columns, "chosen": "winner"})
    assert "data.parquet: missing column 'winner' (mapped from 'chosen') (columns: id, question," in msg
    assert "unknown name 'answer'" in error_of(path, columns={"answer": "good"})


def test_score_names_must_match_and_need_score_columns(tmp_path):
    path = fx.write_rows(tmp_path, fx.plain_pairs(), "jsonl")
    msg = error_of(path, score_names=["a", "b", "c"])
    assert "data.jsonl:1: field 'chosen_scores': expected 3 scores, got 2" in msg
    chat = fx.write_rows(tmp_path, fx.chat_pairs(), "jsonl", name="chat")
    assert "chat.jsonl: missing column 'chosen_scores'" in error_of(chat, score_names=["a"])


def test_prompt_ids_are_stable_hashes_with_suffixes(tmp_path):
    rows = fx.plain_pairs() + [fx.plain_pairs()[0]]
    rows[3] = rows[3] | {"chosen": "four"}
    data = read(fx.write_rows(tmp_path, rows, "jsonl"))
    base = hashlib.sha1(json.dumps("What is 2+2?", sort_keys=True).encode()).hexdigest()[:12]
    assert [r["prompt_id"] for r in data.rows] == [base, prompt_hash("Name a colour."), f"{base}-1", f"{base}-2"]
    again = read(fx.write_rows(tmp_path, rows, "parquet"))
    assert [r["prompt_id"] for r in again.rows] == [r["prompt_id"] for r in data.rows]
    chat = fx.chat_pairs()[0]["prompt"]
    reordered = [{"content": m["content"], "role": m["role"]} for m in chat]
    assert prompt_hash(chat) == prompt_hash(reordered)


def test_given_prompt_ids_are_kept_and_made_unique(tmp_path):
    rows = [r | {"prompt_id": pid} for r, pid in zip(fx.plain_pairs(), ["x", "x-1", "x"])]
    rows.append(fx.plain_pairs()[1] | {"prompt_id": None})
    ids = [r["prompt_id"] for r in read(fx.write_rows(tmp_path, rows, "jsonl")).rows]
    assert ids == ["x", "x-1", "x-2", prompt_hash("Name a colour.")]
    assert len(set(ids)) == len(ids)


# --- bad input -----------------------------------------------------------------------------------------------


def _pair(**changes):
    return fx.plain_pairs()[1] | changes


BAD_ROWS = [  # (row 2 of the file, where/field the message names, skip reason)
    (_pair(prompt="   "), "field 'prompt': empty prompt", "empty_prompt"),
    (_pair(chosen=""), "field 'chosen': empty chosen", "empty_chosen"),
    (_pair(rejected=" \n"), "field 'rejected': empty rejected", "empty_rejected"),
    (_pair(prompt=None), "field 'prompt': missing value", "missing_value"),
    (_pair(prompt=7), "field 'prompt': expected a string or a list of messages", "bad_type"),
    (_pair(chosen_scores=[1.0, float("nan")]), "field 'chosen_scores': score is nan", "nan_score"),
    (_pair(rejected_scores=[float("inf"), 0.0]), "field 'rejected_scores': score is inf", "nan_score"),
    (_pair(chosen_scores=[1.0]), "field 'chosen_scores': expected 2 scores, got 1", "wrong_num_scores"),
    (_pair(rejected_scores=[1.0, 2.0, 3.0]), "field 'rejected_scores': expected 2 scores, got 3", "wrong_num_scores"),
    (_pair(chosen_scores=[1.0, "high"]), "field 'chosen_scores': expected a number, got 'high'", "bad_score"),
    (_pair(rejected="Blue."), "field 'rejected': chosen ('chosen') and rejected are identical", "identical_pair"),
]

BAD_CHAT = [
    ({"chosen": []}, "field 'chosen': empty chosen", "empty_chosen"),
    ({"prompt": []}, "field 'prompt': empty prompt", "empty_prompt"),
    ({"rejected": [{"role": "assistant"}]}, "field 'rejected': message 1 has no 'content'", "bad_message"),
    ({"prompt": [{"content": "hi"}]}, "field 'prompt': message 1 has no 'role'", "bad_message"),
    ({"chosen": "Paris."}, "strings mixed with chat messages", "mixed_formats"),
]


@pytest.mark.parametrize("bad,expected,reason", BAD_ROWS, ids=[b[2] + str(i) for i, b in enumerate(BAD_ROWS)])
def test_bad_rows_name_file_row_and_field(tmp_path, bad, expected, reason):
    rows = [fx.plain_pairs()[0], bad, fx.plain_pairs()[2]]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert error_of(jsonl).startswith(f"{jsonl}:2: {expected}")
    data = read(jsonl, on_bad_row="skip")
    assert data.skipped == {reason: 1} and [r["chosen"] for r in data.rows] == ["4", "Four."]


@pytest.mark.parametrize("bad,expected,reason", BAD_CHAT, ids=[b[2] + str(i) for i, b in enumerate(BAD_CHAT)])
def test_bad_chat_rows(tmp_path, bad, expected, reason):
    rows = fx.chat_pairs() + [fx.chat_pairs()[1] | bad]
    path = fx.write_json_array(tmp_path / "chat.json", rows)
    assert error_of(path).startswith(f"{path}: row 3: {expected}")
    assert read(path, on_bad_row="skip").skipped == {reason: 1}


def test_bad_score_in_parquet_names_the_row(tmp_path):
    rows = fx.plain_pairs()
    rows[2] = rows[2] | {"rejected_scores": [float("nan"), 1.0]}
    path = fx.write_parquet(tmp_path / "data.parquet", rows)
    assert error_of(path).startswith(f"{path}: row 3: field 'rejected_scores': score is nan")


def test_invalid_json_line_names_the_line(tmp_path):
    good = [json.dumps(r) for r in fx.plain_pairs()]
    path = fx.write_lines(tmp_path / "data.jsonl", [good[0], "", '{"prompt": "x", oops}', good[1], "[1, 2]"])
    assert error_of(path).startswith(f"{path}:3: invalid JSON: ")
    data = read(path, on_bad_row="skip")
    assert data.skipped == {"invalid_json": 2} and len(data.rows) == 2
    with pytest.raises(RcsInputError, match=r"data\.jsonl:3: invalid JSON"):
        read_table(str(path))


def test_missing_column_is_fatal_even_when_skipping(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "chosen"} for r in fx.chat_pairs()]
    path = fx.write_parquet(tmp_path / "data.parquet", rows)
    assert error_of(path, on_bad_row="skip") == f"{path}: missing column 'chosen' (columns: prompt, rejected)"
    jsonl = fx.write_jsonl(tmp_path / "data.jsonl", rows)
    assert error_of(jsonl) == f"{jsonl}: missing column 'chosen' (columns: prompt, rejected)"


def test_missing_and_empty_files(tmp_path):
    assert "no such file or directory" in error_of(tmp_path / "nope.jsonl")
    assert "no such file or directory" in error_of(tmp_path / "nope.jsonl", on_bad_row="skip")
    empty = fx.write_lines(tmp_path / "empty.jsonl", [])
    assert error_of(empty) == f"{empty}: no rows"
    (tmp_path / "nodata").mkdir()
    assert "no data files" in error_of(tmp_path / "nodata")
    assert "unknown data format 'csv'" in error_of(empty, format="csv")


def test_skip_mode_counts_each_reason_and_fails_when_nothing_is_left(tmp_path):
    rows = [fx.plain_pairs()[0], BAD_ROWS[0][0], BAD_ROWS[5][0], BAD_ROWS[6][0], BAD_ROWS[10][0]]
    path = fx.write_jsonl(tmp_path / "data.jsonl", rows)
    data = read(path, on_bad_row="skip")
    assert data.skipped == {"empty_prompt": 1, "nan_score": 2, "identical_pair": 1}
    assert len(data.rows) == 1
    only_bad = fx.write_jsonl(tmp_path / "bad.jsonl", rows[1:2])
    assert error_of(only_bad, on_bad_row="skip") == f"{only_bad}: no rows left (skipped: empty_prompt=1)"


# --- prompt lists --------------------------------------------------------------------------------------------


def test_read_prompts_keeps_pairs_when_present(tmp_path):
    only = fx.write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}])
    data = read_prompts(DataConfig(path=str(only)))
    assert data.rows == [
        {"prompt_id": prompt_hash("a"), "prompt": "a"},
        {"prompt_id": prompt_hash("b"), "prompt": "b"},
        {"prompt_id": prompt_hash("a") + "-1", "prompt": "a"},
    ]
    assert data.objectives == []
    rows = fx.plain_pairs()
    rows[1] = rows[1] | {"chosen": None, "rejected": None, "chosen_scores": None, "rejected_scores": None}
    data = read_prompts(DataConfig(path=str(fx.write_parquet(tmp_path / "p.parquet", rows))))
    assert data.rows[1] == {"prompt_id": prompt_hash("Name a colour."), "prompt": "Name a colour."}
    assert data.rows[0] == expected_rows(fx.plain_pairs())[0] and len(data.objectives) == 2
    rows[1]["chosen"] = "Blue."
    path = fx.write_parquet(tmp_path / "q.parquet", rows)
    with pytest.raises(RcsInputError, match=r"q\.parquet: row 2: field 'rejected': missing value"):
        read_prompts(DataConfig(path=str(path)))


def test_core_imports_stay_pure(tmp_path):
    path = fx.write_jsonl(tmp_path / "d.jsonl", fx.plain_pairs())
    code = (
        "import sys; from rcs_ray.config import DataConfig; from rcs_ray.data import read_preferences; "
        f"read_preferences(DataConfig(path={str(path)!r})); "
        "print([m for m in ('ray', 'vllm', 'deepspeed', 'datasets') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
