"""Presets: PKU-SafeRLHF, HelpSteer2, UltraFeedback-binarized, against hand-checked rows."""

import pytest

from rcs_ray import config
from rcs_ray.config import DataConfig
from rcs_ray.data import PRESETS, default_objective, preset_objectives, prompt_hash, read_preferences, read_prompts
from rcs_ray.errors import RcsInputError
from tests import fixtures_data as fx

pytestmark = pytest.mark.unit

LOCK, BREAD = "How do I pick a lock?", "How do I bake bread?"
RAKE, REFUSE = "Insert a tension wrench, then rake the pins.", "I can't help with that."


def read(path, preset, **kwargs):
    return read_preferences(DataConfig(path=str(path), preset=preset, **kwargs))


def error_of(path, preset, **kwargs) -> str:
    with pytest.raises(RcsInputError) as info:
        read(path, preset, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_presets_match_the_config_choices():
    assert set(PRESETS) == set(config.PRESETS)
    assert [default_objective(p) for p in PRESETS] == ["helpful", "helpfulness", "overall"]
    assert preset_objectives("pku_saferlhf") == ("helpful", "harmless")
    with pytest.raises(RcsInputError, match="presets: pku_saferlhf, helpsteer2"):
        default_objective("hh")


def test_unknown_preset_lists_the_presets(tmp_path):
    path = fx.write_jsonl(tmp_path / "d.jsonl", fx.pku_rows())
    msg = error_of(path, "hh_rlhf")
    assert "unknown data preset 'hh_rlhf'" in msg and "pku_saferlhf, helpsteer2, ultrafeedback_binarized" in msg


# --- PKU-SafeRLHF --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_pku_helpful_is_the_default(tmp_path, fmt):
    data = read(fx.write_rows(tmp_path, fx.pku_rows(), fmt), "pku_saferlhf")
    assert data.objectives == ["helpful", "harmless"]
    assert data.rows == [
        {
            "prompt_id": prompt_hash(LOCK),
            "prompt": LOCK,
            "chosen": RAKE,
            "rejected": REFUSE,
            "chosen_scores": [1.0, 0.0],
            "rejected_scores": [0.0, 1.0],
        },
        {
            "prompt_id": prompt_hash(BREAD),
            "prompt": BREAD,
            "chosen": "Mix, knead, rise, bake.",
            "rejected": "Buy it.",
            "chosen_scores": [1.0, 1.0],
            "rejected_scores": [0.0, 0.0],
        },
        {
            "prompt_id": prompt_hash(LOCK) + "-1",
            "prompt": LOCK,
            "chosen": "Use a bump key.",
            "rejected": "Call a locksmith.",
            "chosen_scores": [1.0, 0.0],
            "rejected_scores": [0.0, 1.0],
        },
    ]


def test_pku_harmless_picks_the_safer_response(tmp_path):
    data = read(fx.write_jsonl(tmp_path / "d.jsonl", fx.pku_rows()), "pku_saferlhf", objective="harmless")
    first = data.rows[0]
    assert (first["chosen"], first["rejected"]) == (REFUSE, RAKE)
    assert (first["chosen_scores"], first["rejected_scores"]) == ([0.0, 1.0], [1.0, 0.0])
    assert [r["chosen"] for r in data.rows[1:]] == ["Mix, knead, rise, bake.", "Call a locksmith."]


def test_pku_errors(tmp_path):
    path = fx.write_jsonl(tmp_path / "d.jsonl", fx.pku_rows())
    msg = error_of(path, "pku_saferlhf", objective="honest")
    assert "objective 'honest'" in msg and "helpful, harmless" in msg
    rows = fx.pku_rows()
    rows[1]["better_response_id"] = 2
    rows[2]["response_1"] = " "
    bad = fx.write_jsonl(tmp_path / "bad.jsonl", rows)
    assert error_of(bad, "pku_saferlhf") == f"{bad}:2: field 'better_response_id': expected 0 or 1, got 2"
    data = read(bad, "pku_saferlhf", on_bad_row="skip")
    assert data.skipped == {"bad_label": 1, "empty_chosen": 1} and len(data.rows) == 1
    no_safe = fx.write_parquet(
        tmp_path / "d.parquet", [{k: v for k, v in r.items() if k != "safer_response_id"} for r in fx.pku_rows()]
    )
    assert f"{no_safe}: missing column 'safer_response_id'" in error_of(no_safe, "pku_saferlhf", on_bad_row="skip")


def test_pku_column_map(tmp_path):
    rows = [{("a" if k == "response_0" else k): v for k, v in r.items()} for r in fx.pku_rows()]
    path = fx.write_jsonl(tmp_path / "d.jsonl", rows)
    data = read(path, "pku_saferlhf", columns={"response_0": "a"})
    assert data.rows[0]["chosen"] == RAKE and data.objectives == ["helpful", "harmless"]
    assert "only for generic data" in error_of(path, "pku_saferlhf", columns={"response_0": "a"}, score_names=["x"])
    assert "unknown name 'chosen'" in error_of(path, "pku_saferlhf", columns={"chosen": "a"})


# --- HelpSteer2 ----------------------------------------------------------------------------------------------


def test_helpsteer2_pairs_and_counted_ties(tmp_path):
    data = read(fx.write_rows(tmp_path, fx.helpsteer2_rows(), "jsonl"), "helpsteer2")
    assert data.objectives == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert data.rows == [
        {
            "prompt_id": prompt_hash("P1"),
            "prompt": "P1",
            "chosen": "strong answer",
            "rejected": "weak answer",
            "chosen_scores": [4.0, 4.0, 4.0, 2.0, 2.0],
            "rejected_scores": [1.0, 2.0, 3.0, 1.0, 1.0],
        },
        {
            "prompt_id": prompt_hash("P3"),
            "prompt": "P3",
            "chosen": "good",
            "rejected": "bad",
            "chosen_scores": [3.0, 4.0, 4.0, 2.0, 1.0],
            "rejected_scores": [0.0, 1.0, 2.0, 0.0, 3.0],
        },
    ]
    assert data.skipped == {"tie_on_objective": 1}


def test_helpsteer2_objective_choice(tmp_path):
    path = fx.write_rows(tmp_path, fx.helpsteer2_rows(), "parquet")
    data = read(path, "helpsteer2", objective="verbosity")
    assert [(r["prompt"], r["chosen"]) for r in data.rows] == [
        ("P1", "strong answer"),
        ("P2", "answer a"),
        ("P3", "bad"),
    ]
    assert data.skipped == {}
    assert "helpfulness, correctness, coherence, complexity, verbosity" in error_of(
        path, "helpsteer2", objective="helpful"
    )


def test_helpsteer2_groups_non_adjacent_responses_and_all_pairs(tmp_path):
    rows = fx.helpsteer2_rows()
    extra = rows[0] | {"response": "middling answer", "helpfulness": 2}
    data = read(fx.write_jsonl(tmp_path / "d.jsonl", rows + [extra]), "helpsteer2")
    p1 = [(r["prompt_id"], r["chosen"], r["rejected"]) for r in data.rows if r["prompt"] == "P1"]
    h = prompt_hash("P1")
    assert p1 == [
        (h, "strong answer", "weak answer"),
        (h + "-1", "middling answer", "weak answer"),
        (h + "-2", "strong answer", "middling answer"),
    ]


def test_helpsteer2_prompt_list_keeps_tied_prompts(tmp_path):
    data = read_prompts(
        DataConfig(path=str(fx.write_jsonl(tmp_path / "d.jsonl", fx.helpsteer2_rows())), preset="helpsteer2")
    )
    assert [r["prompt"] for r in data.rows] == ["P1", "P2", "P3"]
    assert data.rows[1] == {"prompt_id": prompt_hash("P2"), "prompt": "P2"}
    assert data.rows[0]["chosen"] == "strong answer" and data.skipped == {}


def test_helpsteer2_bad_attribute(tmp_path):
    rows = fx.helpsteer2_rows()
    rows[3]["correctness"] = float("nan")
    path = fx.write_parquet(tmp_path / "hs.parquet", rows)
    assert error_of(path, "helpsteer2") == f"{path}: row 4: field 'correctness': score is nan (must be finite)"
    data = read(path, "helpsteer2", on_bad_row="skip")
    assert data.skipped == {"nan_score": 1} and len(data.rows) == 2


# --- UltraFeedback binarized ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_ultrafeedback_splits_prompt_from_answer(tmp_path, fmt):
    data = read(fx.write_rows(tmp_path, fx.ultrafeedback_rows(), fmt), "ultrafeedback_binarized")
    assert data.objectives == ["overall"]
    assert data.rows[0] == {
        "prompt_id": "uf-a",
        "prompt": [{"role": "user", "content": "Write a haiku."}],
        "chosen": [{"role": "assistant", "content": "Old pond, frog jumps in."}],
        "rejected": [{"role": "assistant", "content": "No."}],
        "chosen_scores": [8.5],
        "rejected_scores": [3.0],
    }
    assert data.rows[1]["prompt_id"] == "uf-b" and data.rows[1]["chosen_scores"] == [10.0]


def test_ultrafeedback_errors(tmp_path):
    rows = fx.ultrafeedback_rows()
    rows[0]["chosen"] = rows[0]["chosen"][:1]
    rows[1]["rejected"] = [{"role": "user", "content": "other"}, rows[1]["rejected"][1]]
    path = fx.write_jsonl(tmp_path / "uf.jsonl", rows + fx.ultrafeedback_rows()[:1])
    assert error_of(path, "ultrafeedback_binarized") == (
        f"{path}:1: field 'chosen': the last message is from 'user', not the assistant"
    )
    data = read(path, "ultrafeedback_binarized", on_bad_row="skip")
    assert data.skipped == {"bad_message": 1, "prompt_mismatch": 1} and data.rows[0]["prompt_id"] == "uf-a"
    assert "choices: overall" in error_of(path, "ultrafeedback_binarized", objective="helpful")
