"""`streamrun synth`: exact token counts, spreads, shared prefixes, ids, Mooncake traces, sessions.

Tokenizers are trained here on the synth word list (no network): a
WordLevel one (one token per word) and a tiny byte-level BPE (300 tokens,
so words split into pieces and slices end mid-word).
"""

from __future__ import annotations

import io
import statistics
import sys
import types
from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from runner.inputs.synth import WORDS, Shortfall, SynthError, SynthSpec, shared_prefixes, synth_lines, write_lines
from runner.inputs.synth_trace import BlockTexts, TraceRequest, trace_lines
from runner.inputs.tokenizer import CharEstimate, TokenizerError, load_tokenizer
from runner.inputs.tokens import estimate_prompt_tokens, estimate_text_tokens
from runner.mock import prompt_tokens_estimate
from tests.helpers import ROOT, streamrun, write_jsonl

SAMPLE_TRACE = ROOT / "sample_inputs" / "traces" / "mooncake_trace.jsonl"


# -- tokenizers built here ------------------------------------------------------


def _word_level(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["[UNK]"],
                                                                          show_progress=False))
    tok.save(str(path))
    return path


def _tiny_bpe(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 3, trainer)
    tok.enable_truncation(64)  # shipped tokenizer.json files can have this on: loading must switch it off
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok")
    (root / "model-dir").mkdir()
    return {"wordlevel": _word_level(root / "wordlevel.json"), "bpe": _tiny_bpe(root / "bpe.json"),
            "dir": _tiny_bpe(root / "model-dir" / "tokenizer.json").parent}


@pytest.fixture(params=["wordlevel", "bpe", "dir"])
def hf(request, tokenizer_files):
    return load_tokenizer(str(tokenizer_files[request.param]))


def lines(spec: SynthSpec, tok=None) -> list[dict]:
    return list(synth_lines(spec, tok))


def content(line: dict) -> str:
    return line["messages"][-1]["content"]


def cli(*args: str):
    from runner.cli.synth import synth_command

    return CliRunner().invoke(synth_command, list(args))


# -- exact counts -----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 128, 512])
def test_counts_are_exact_with_a_tokenizer(hf, n):
    shortfall = Shortfall()
    out = list(synth_lines(SynthSpec(count=4, input_tokens=n, seed=n), hf, shortfall))
    assert [hf.count(content(line)) for line in out] == [n] * 4
    assert shortfall.lines == 0
    assert n < 7 or len({content(line) for line in out}) == 4  # 1-token texts may repeat


def test_the_bpe_really_splits_words(tokenizer_files):
    """Otherwise the BPE cases would test nothing the WordLevel ones do not."""
    bpe = load_tokenizer(str(tokenizer_files["bpe"]))
    text = content(lines(SynthSpec(count=1, input_tokens=300), bpe)[0])
    assert len(text.split()) < 200 and bpe.count(text) == 300  # > 1 token per word, truncation (64) off


@pytest.mark.parametrize("n", [1, 2, 3, 5, 128, 513])
def test_fallback_counts_match_estimate_and_mock(no_tiktoken, n):
    out = lines(SynthSpec(count=3, input_tokens=n, seed=2))
    overhead = prompt_tokens_estimate({"messages": [{"role": "user", "content": ""}]})
    for line in out:
        assert estimate_text_tokens(content(line)) == n
        assert estimate_prompt_tokens(line) - overhead == n            # what `streamrun estimate` adds up
        assert prompt_tokens_estimate(line) - overhead == n            # what the mock reports
        assert len(content(line)) > 4 * (n - 1)


def test_the_same_spec_writes_the_same_lines():
    a, b = io.BytesIO(), io.BytesIO()
    spec = SynthSpec(count=5, input_tokens=50, output_tokens=7, seed=9, ignore_eos=True)
    write_lines(a, synth_lines(spec))
    write_lines(b, synth_lines(spec))
    assert a.getvalue() == b.getvalue()
    out = [orjson.loads(x) for x in a.getvalue().splitlines()]
    assert len(out) == 5 and len({line["custom_id"] for line in out}) == 5
    assert all(estimate_text_tokens(content(line)) == 50 for line in out)
    assert all(line["max_tokens"] == 7 and line["ignore_eos"] is True and "model" not in line for line in out)


# -- spreads ---------------------------------------------------------------------


def test_stddev_spreads_are_seeded_and_clipped():
    spec = SynthSpec(count=400, input_tokens=3, output_tokens=40, input_stddev=4, output_stddev=30, seed=5)
    first = lines(spec)
    ins = [estimate_text_tokens(content(line)) for line in first]
    outs = [line["max_tokens"] for line in first]
    assert min(ins) == 1 and min(outs) == 1                 # clipped, and the clip is reached
    assert max(ins) > 8 and max(outs) > 90                  # spread, not pinned
    assert statistics.pstdev(outs) > 15
    assert [line["max_tokens"] for line in lines(spec)] == outs                          # same seed
    assert [line["max_tokens"] for line in lines(SynthSpec(**{**spec.__dict__, "seed": 6}))] != outs
    fixed = lines(SynthSpec(count=20, input_tokens=30, output_tokens=9))
    assert {line["max_tokens"] for line in fixed} == {9}
    assert {estimate_text_tokens(content(line)) for line in fixed} == {30}


def test_spread_with_a_prefix_keeps_a_token_of_its_own():
    out = lines(SynthSpec(count=200, input_tokens=12, input_stddev=20, prefix_tokens=10, seed=1))
    assert min(estimate_text_tokens(content(line)) for line in out) == 11


# -- shared prefixes --------------------------------------------------------------


def test_prefixes_are_shared_exactly_k_ways():
    p, k = 16, 3
    out = lines(SynthSpec(count=12, input_tokens=40, prefix_tokens=p, num_prefixes=k, seed=4))
    heads = [content(line)[:4 * p] for line in out]
    assert len(set(heads)) == k
    assert Counter(heads).most_common()[-1][1] == 12 // k                  # evenly
    assert all(heads[i] == heads[i % k] for i in range(12))                 # round-robin
    assert len({content(line)[4 * p:] for line in out}) == 12               # the rest is each line's own
    assert {estimate_text_tokens(content(line)) for line in out} == {40}


def test_prefixes_with_a_tokenizer(hf):
    spec = SynthSpec(count=6, input_tokens=64, prefix_tokens=48, num_prefixes=2, seed=8)
    prefixes = shared_prefixes(spec, hf, Shortfall())
    assert len(set(prefixes)) == 2 and [hf.count(p) for p in prefixes] == [48, 48]
    out = lines(spec, hf)
    assert all(content(line).startswith(prefixes[i % 2]) for i, line in enumerate(out))
    assert [hf.count(content(line)) for line in out] == [64] * 6


@pytest.mark.parametrize("args, message", [
    (("--prefix-tokens", "128"), "--prefix-tokens 128 must be less than --input-tokens 128"),
    (("--num-prefixes", "3"), "--num-prefixes needs --prefix-tokens"),
    (("--think-time", "1"), "--think-time needs --turns"),
    (("--from-trace", str(SAMPLE_TRACE), "--input-tokens", "9"), "--input-tokens does not apply to --from-trace"),
    (("--block-tokens", "64"), "--block-tokens applies to --from-trace only"),
])
def test_contradictory_flags_are_refused(args, message):
    res = cli(*args)
    assert res.exit_code == 2 and message in res.stderr and res.stdout == ""


def test_too_many_tiny_prefixes_are_refused():
    with pytest.raises(SynthError, match="distinct prefixes"):
        lines(SynthSpec(count=2, input_tokens=5, prefix_tokens=1, num_prefixes=len(WORDS) + 50))


# -- ids ---------------------------------------------------------------------------


def test_ids_differ_across_seeds_and_honour_id_prefix():
    ids = {seed: {line["custom_id"] for line in lines(SynthSpec(count=30, input_tokens=4, seed=seed))}
           for seed in (1, 11, 12, -1)}
    assert all(len(v) == 30 for v in ids.values())
    seeds = list(ids)
    assert all(not ids[a] & ids[b] for a in seeds for b in seeds if a != b)   # synth-1-12 is not synth-11-2
    named = lines(SynthSpec(count=12, input_tokens=4, id_prefix="a"))
    longer = lines(SynthSpec(count=12, input_tokens=4, id_prefix="a1"))
    assert named[0]["custom_id"] == "a-0"
    assert not {x["custom_id"] for x in named} & {x["custom_id"] for x in longer}  # a-10 vs a1-0


# -- Mooncake traces ------------------------------------------------------------


def trace(tmp_path: Path, rows: list) -> Path:
    return write_jsonl(tmp_path / "trace.jsonl", rows)


def row(ts, length, ids, out=5) -> dict:
    return {"timestamp": ts, "input_length": length, "output_length": out, "hash_ids": ids}


def convert(path: Path, tok=None, **kwargs) -> tuple[list[dict], list[str]]:
    errors: list[str] = []
    out = list(trace_lines(str(path), tok or CharEstimate(), on_error=errors.append, **kwargs))
    return out, errors


def test_trace_blocks_share_text_exactly_where_hash_ids_do(tmp_path):
    path = trace(tmp_path, [row(0, 1100, [1, 2, 3]), row(250.5, 1300, [1, 2, 4]), row(900, 600, [5, 6], out=77)])
    (a, b, c), errors = convert(path)
    assert errors == []
    ta, tb, tc = map(content, (a, b, c))
    assert ta[:4 * 1024] == tb[:4 * 1024]                                   # blocks 1 and 2 shared
    assert ta[4 * 1024:4 * 1024 + 40] != tb[4 * 1024:4 * 1024 + 40]         # block 3 is not block 4
    assert ta[:40] != tc[:40]                                               # block 1 is not block 5
    assert [estimate_text_tokens(t) for t in (ta, tb, tc)] == [1100, 1300, 600]
    assert [x["timestamp"] for x in (a, b, c)] == [0, 250.5, 900]
    assert [x["max_tokens"] for x in (a, b, c)] == [5, 5, 77]
    assert [x["custom_id"] for x in (a, b, c)] == ["trace-0-1", "trace-0-2", "trace-0-3"]


def test_trace_block_text_depends_on_seed_and_id_only(tmp_path):
    first = BlockTexts(CharEstimate(), seed=3)
    again = BlockTexts(CharEstimate(), seed=3)
    other = BlockTexts(CharEstimate(), seed=4)
    req = TraceRequest(1, 0, 700, 1, (42, 43))
    assert first.prompt(req) == again.prompt(req) != other.prompt(req)
    partial = first.prompt(TraceRequest(2, 0, 100, 1, (42,)))
    assert first.prompt(req).startswith(partial)                         # a partial block is the full one's start


def test_trace_lengths_are_exact_with_a_tokenizer(hf, tmp_path):
    path = trace(tmp_path, [row(0, 1100, [1, 2, 3]), row(1, 1024, [1, 2]), row(2, 1, [9])])
    out, errors = convert(path, hf, seed=1)
    assert errors == []
    assert [hf.count(content(x)) for x in out] == [1100, 1024, 1]
    assert content(out[0]).startswith(content(out[1]))                  # same two blocks, same text


def test_bad_trace_lines_are_reported_with_file_and_line_and_skipped(tmp_path):
    path = trace(tmp_path, [row(0, 10, [1]), "{not json", row(1, 600, [1]), row(2, 10, [1], out=0),
                            {"input_length": 3, "output_length": 1, "hash_ids": [1]}, "", row(3, 20, [2])])
    out, errors = convert(path)
    assert [x["custom_id"] for x in out] == ["trace-0-1", "trace-0-7"]
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    assert "hash_ids has 1" in errors[1] and "output_length" in errors[2] and "timestamp" in errors[3]
    res = streamrun("synth", "--from-trace", path)
    assert res.returncode == 1, res.stderr
    assert f"{path}:2: not valid JSON" in res.stderr and "skipped 4 bad line(s)" in res.stderr
    assert [orjson.loads(x)["custom_id"] for x in res.stdout.splitlines()] == ["trace-0-1", "trace-0-7"]
    # Read as every JSONL file is (runner/io/jsonl): a BOM, CRLF line ends, and a torn last line said as such.
    windows = tmp_path / "windows.jsonl"
    windows.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(row(0, 10, [1])) + b"\r\n" + orjson.dumps(row(5, 10, [1]))[:-9])
    out, errors = convert(windows)
    assert [x["custom_id"] for x in out] == ["trace-0-1"]
    assert errors == [f"{windows}:2: a torn last line (no newline, not valid JSON), as an interrupted write leaves"]


def test_sample_trace_converts_cleanly():
    res = cli("--from-trace", str(SAMPLE_TRACE), "--id-prefix", "mc", "--n", "15")
    assert res.exit_code == 0, res.stderr
    out = [orjson.loads(x) for x in res.stdout.splitlines()]
    rows = [orjson.loads(x) for x in SAMPLE_TRACE.read_bytes().splitlines()]
    assert len(rows) >= 18 and len(out) == 15
    assert [x["timestamp"] for x in out] == [r["timestamp"] for r in rows[:15]]
    assert [estimate_text_tokens(content(x)) for x in out] == [r["input_length"] for r in rows[:15]]
    assert out[0]["custom_id"] == "mc-1"
    shared = Counter(b for r in rows for b in r["hash_ids"])
    assert sum(1 for n in shared.values() if n > 1) >= 3            # the sample does exercise prefix sharing


# -- sessions ---------------------------------------------------------------------


def test_turns_lines(hf):
    out = lines(SynthSpec(count=3, turns=4, input_tokens=20, output_tokens=9, think_time=1.5,
                          prefix_tokens=30, seed=2), hf)
    for line in out:
        assert len(line["turns"]) == 4 and len(set(line["turns"])) == 4
        assert [hf.count(t) for t in line["turns"]] == [20] * 4
        assert line["messages"][0]["role"] == "system" and hf.count(line["messages"][0]["content"]) == 30
        assert line["think_time_s"] == 1.5 and line["max_tokens"] == 9
    plain = lines(SynthSpec(count=1, turns=2, input_tokens=5))[0]
    assert set(plain) == {"custom_id", "turns", "max_tokens"}


# -- the command line and tokenizer loading ---------------------------------------


def test_cli_with_a_tokenizer_directory(tokenizer_files):
    res = cli("--count", "3", "--input-tokens", "100", "--tokenizer", str(tokenizer_files["dir"]), "--seed", "3",
              "--model", "m", "--ignore-eos")
    assert res.exit_code == 0, res.stderr
    tok = load_tokenizer(str(tokenizer_files["dir"]))
    out = [orjson.loads(x) for x in res.stdout.splitlines()]
    assert [tok.count(content(x)) for x in out] == [100] * 3
    assert all(x["model"] == "m" and x["ignore_eos"] is True for x in out)
    assert out[0]["custom_id"] == "synth-3-0"


def test_tokenizer_errors_are_one_line_and_name_the_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{broken")
    (tmp_path / "empty").mkdir()
    cases = {str(bad): [str(bad), "not a Hugging Face tokenizer.json", "line 1"],
             str(tmp_path / "empty"): ["empty: no tokenizer.json in this directory"],
             str(tmp_path / "missing.json"): ["missing.json: no such file or directory"]}
    for spec, words in cases.items():
        with pytest.raises(TokenizerError) as info:
            load_tokenizer(spec)
        assert "\n" not in str(info.value) and all(w in str(info.value) for w in words), str(info.value)
    res = cli("--tokenizer", "no-such-tokenizer")
    assert res.exit_code == 2 and "no-such-tokenizer" in res.stderr and res.stdout == ""


class WordEncoding:
    """A fake tiktoken encoding: one id per word, decode joins them back."""

    def encode(self, text: str, **_kwargs) -> list[int]:
        return [WORDS.index(w) if w in WORDS else -1 for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(WORDS[i] if i >= 0 else "?" for i in ids)


def test_tiktoken_encodings_load_offline_only(no_tiktoken, monkeypatch, tmp_path):
    with pytest.raises(TokenizerError, match="not installed"):
        load_tokenizer("cl100k_base")
    module = types.ModuleType("tiktoken")
    module.get_encoding = lambda name: WordEncoding()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", module)
    from runner.inputs import tokens

    tokens.reset_tokenizer_cache()
    with pytest.raises(TokenizerError, match="STREAMRUN_TIKTOKEN_DOWNLOAD=1"):
        load_tokenizer("cl100k_base")                     # not cached: never a surprise download
    monkeypatch.setenv("STREAMRUN_TIKTOKEN_DOWNLOAD", "1")
    tokens.reset_tokenizer_cache()
    tok = load_tokenizer("cl100k_base")
    out = lines(SynthSpec(count=2, input_tokens=33, prefix_tokens=10), tok)
    assert [tok.count(content(x)) for x in out] == [33, 33]


def test_synth_is_registered_lazily():
    res = streamrun("synth", "--n", "2", "--input-tokens", "4", "--output-tokens", "2", "--seed", "1")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 2
    assert [orjson.loads(x)["custom_id"] for x in res.stdout.splitlines()] == ["synth-1-0", "synth-1-1"]


def test_shortfall_is_reported_not_hidden():
    """A counter that cannot hit n exactly (every text counts even) gives the closest, and says so."""

    class EvenCounter(CharEstimate):
        def count(self, text: str) -> int:
            n = super().count(text)
            return n + n % 2

    shortfall = Shortfall()
    out = list(synth_lines(SynthSpec(count=3, input_tokens=7), EvenCounter(), shortfall))
    assert len(out) == 3 and shortfall.lines == 3 and shortfall.worst == 1
