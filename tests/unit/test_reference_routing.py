"""Where a stage's reference log-probs come from (rcs_ray/train/features.py): with ``in_workers`` the driver only
tokenizes (no actor, no model) and hands the cache key to the training workers; once the workers have written the
cache under that key, a rerun reads it back instead."""

import pyarrow as pa
import pytest

from rcs_ray.data.pairs import PairSet
from rcs_ray.train import refs
from rcs_ray.train.features import reference_features
from rcs_ray.train.margins import LossInputs
from rcs_ray.train.ref_stages import TOKEN_COLUMNS
from tests.wordtok import BOS, EOS, ids

pytestmark = pytest.mark.unit

ROWS = [
    {"prompt_id": "a", "prompt": "hi there", "chosen": "good answer", "rejected": "bad answer"},
    {"prompt_id": "b", "prompt": "how are you", "chosen": "very good", "rejected": "bad"},
]


@pytest.fixture
def settings(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    return refs.FeatureSettings(tokenizer=str(tmp_path / "tok"), pad_token_id=0, max_length=32, chat_template=False)


def test_the_driver_tokenizes_and_the_workers_get_the_key_then_a_rerun_reads_their_cache(settings, tmp_path):
    prs, cache = PairSet(rows=ROWS, source="p.jsonl"), str(tmp_path / "out")
    first = reference_features(prs, LossInputs(), "/models/policy", settings, cache, False, in_workers=True)
    assert first.how == "training workers" and first.table.column_names == ["index", *TOKEN_COLUMNS]
    # the key a separate pass of the same reference would cache under
    stamp = refs._stamp(settings)
    assert first.workers_key == refs.cache_key(prs.table(), {"ref": "/models/policy"}, stamp)
    row = first.table.to_pylist()[1]  # plain text: BOS + prompt, then the response and EOS, labels on the response
    assert row["chosen_input_ids"] == [BOS, *ids("how are you very good"), EOS]
    assert row["chosen_labels"] == [-100] * 4 + [*ids("very good"), EOS]
    assert row["rejected_input_ids"] == [BOS, *ids("how are you bad"), EOS]

    # what rank 0 writes before step 1 (rcs_ray/train/worker_refs.py)
    done = first.table.append_column("ref_chosen_logps", pa.array([-1.5, -2.5]))
    done = done.append_column("ref_rejected_logps", pa.array([-3.0, -4.0]))
    refs.write_cache(cache, done, first.workers_key, {"ref": "/models/policy"})
    again = reference_features(prs, LossInputs(), "/models/policy", settings, cache, False, in_workers=True)
    assert again.how == "cached" and again.workers_key is None
    assert again.table.column("ref_rejected_logps").to_pylist() == [-3.0, -4.0]

    other = reference_features(prs, LossInputs(), "/models/other", settings, cache, False, in_workers=True)
    assert other.how == "training workers" and other.workers_key != first.workers_key  # another reference
