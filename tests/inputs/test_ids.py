"""runner.inputs.ids: shards, id hashes and the sets built from them (done-sets for resume, duplicate checks)."""

import random
from collections import Counter

import pytest

from runner.inputs.ids import (
    DoneIds,
    HashSorter,
    SeenIds,
    Shard,
    id_hash,
    parse_shard,
    resume_key,
    shard_from_env,
    shard_of,
)


def test_parse_shard():
    assert parse_shard("2/8") == Shard(2, 8)
    assert parse_shard(" 0/1 ") == Shard(0, 1)
    assert str(parse_shard("7/8")) == "7/8"


@pytest.mark.parametrize(
    "text, words",
    [
        ("8/8", "0-based"),
        ("-1/8", "0-based"),
        ("a/b", "two integers"),
        ("0/0", ">= 1"),
        ("3", "I/N"),
        ("", "I/N"),
    ],
)
def test_parse_shard_errors(text, words):
    with pytest.raises(ValueError, match=words):
        parse_shard(text)


def test_shard_checks_its_fields():
    with pytest.raises(ValueError):
        Shard(8, 8)
    with pytest.raises(ValueError):
        Shard(0, 0)


def test_shard_of_is_pinned():
    # A change here moves ids between shards and breaks resuming sharded
    # runs: only change these values on purpose.
    assert shard_of("req-1", 8) == 3
    assert shard_of("req-1", 1000) == 243
    assert shard_of("prompts.jsonl:3", 8) == 1
    assert shard_of("prompts.jsonl:3", 1000) == 737
    assert shard_of("héllo", 1000) == 259
    assert shard_of("", 8) == 4
    # Same thing spelled out: first 8 bytes of BLAKE2b, big-endian, mod N.
    assert int("044754de574a870b", 16) % 1000 == 243


def test_shard_of_rejects_zero_count():
    with pytest.raises(ValueError):
        shard_of("x", 0)


def test_distribution_is_roughly_even():
    n, count = 10_000, 8
    sizes = Counter(shard_of(f"req-{i}", count) for i in range(n))
    assert set(sizes) == set(range(count))
    expected = n / count  # 1250; binomial sd ~33, so +-15% is > 5 sd
    for size in sizes.values():
        assert 0.85 * expected < size < 1.15 * expected


def test_every_id_in_exactly_one_shard():
    shards = [Shard(i, 5) for i in range(5)]
    for i in range(2_000):
        cid = f"file.jsonl:{i}"
        assert sum(s.owns(cid) for s in shards) == 1


def test_adding_ids_does_not_move_old_ones():
    old = [f"req-{i}" for i in range(1_000)]
    before = {cid: shard_of(cid, 4) for cid in old}
    grown = [f"new-{i}" for i in range(5_000)] + old[::-1]
    after = {cid: shard_of(cid, 4) for cid in grown}
    assert all(after[cid] == before[cid] for cid in old)


def test_env_none_when_not_under_a_scheduler():
    assert shard_from_env({}) is None
    assert shard_from_env({"PATH": "/bin", "JOB_COMPLETION_INDEX": ""}) is None


def test_env_kubernetes():
    env = {"JOB_COMPLETION_INDEX": "3", "STREAMRUN_SHARD_COUNT": "8"}
    assert shard_from_env(env) == Shard(3, 8)


def test_env_kubernetes_missing_count_names_the_variable():
    with pytest.raises(ValueError, match="STREAMRUN_SHARD_COUNT") as e:
        shard_from_env({"JOB_COMPLETION_INDEX": "3"})
    assert ".spec.completions" in str(e.value)


def test_env_kubernetes_index_out_of_range():
    with pytest.raises(ValueError, match="outside 0..3"):
        shard_from_env({"JOB_COMPLETION_INDEX": "4", "STREAMRUN_SHARD_COUNT": "4"})


def test_env_slurm_from_zero():
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert shard_from_env(env) == Shard(2, 4)


def test_env_slurm_array_not_starting_at_zero():
    # sbatch --array=1-8: task ids 1..8 map to shards 0..7.
    base = {"SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_env({**base, "SLURM_ARRAY_TASK_ID": "1"}) == Shard(0, 8)
    assert shard_from_env({**base, "SLURM_ARRAY_TASK_ID": "8"}) == Shard(7, 8)


def test_env_slurm_stepped_array():
    # sbatch --array=10-16:2: task ids 10, 12, 14, 16.
    env = {
        "SLURM_ARRAY_TASK_ID": "14",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "10",
        "SLURM_ARRAY_TASK_STEP": "2",
    }
    assert shard_from_env(env) == Shard(2, 4)


def test_env_slurm_missing_count_names_the_variable():
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_COUNT"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "2"})


def test_env_slurm_sparse_array_is_refused():
    # sbatch --array=1,3,5,7 without a step: id 7 - min 1 = 6 is not a shard of 4.
    env = {
        "SLURM_ARRAY_TASK_ID": "7",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "1",
    }
    with pytest.raises(ValueError, match="--array=0-3"):
        shard_from_env(env)


def test_env_not_an_integer():
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX must be an integer"):
        shard_from_env({"JOB_COMPLETION_INDEX": "x", "STREAMRUN_SHARD_COUNT": "2"})


def test_env_both_schedulers_is_ambiguous():
    env = {
        "JOB_COMPLETION_INDEX": "0",
        "STREAMRUN_SHARD_COUNT": "2",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_COUNT": "2",
    }
    with pytest.raises(ValueError, match="--shard"):
        shard_from_env(env)

def test_hash_sorter_and_done_ids_agree_with_a_plain_sort():
    rng = random.Random(5)
    values = [rng.getrandbits(64) for _ in range(5000)] + [0, 2**64 - 1]
    sorter = HashSorter()
    for v in values:
        sorter.add(v)
    assert list(sorter.sorted()) == sorted(values)
    ids = HashSorter()
    for i in range(100):
        ids.add(id_hash(f"id-{i}"))
    done = DoneIds(ids)
    assert len(done) == 100 and "id-7" in done and "id-100" not in done


def test_id_hash_is_stable_and_64_bit():
    # the same id hashes the same in every process (never the salted hash())
    assert id_hash("req-1") == id_hash("req-1") != id_hash("req-2")
    assert all(0 <= id_hash(f"x{i}") < 2**64 for i in range(100))
    assert id_hash("é") == id_hash("\u00e9")


def test_seen_ids_name_the_first_place():
    seen = SeenIds()
    assert seen.check("a", "<stdin>:1") is None
    assert seen.check("b", "<stdin>:2") is None
    assert seen.check("a", "<stdin>:3") == "<stdin>:1"
    assert seen.check("a", "<stdin>:4") == "<stdin>:1"  # always the first one


def test_resume_key_separates_stages():
    assert resume_key(None, "x") == "x"
    assert resume_key("c=4", "x") == "c=4\x00x"
    assert resume_key("c=4", "x") != resume_key("c=8", "x")
