"""Inputs that can be read only once: stdin, a named FIFO, `<(process substitution)`.

They are read once, each line sent as it arrives (not after a batch fills),
and a SIGTERM ends the run even while the writer keeps the pipe open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from tests.helpers import STREAMRUN, read_jsonl, streamrun, write_jsonl


def lines(n: int) -> str:
    return "".join(f'{{"custom_id": "p{i}", "prompt": "x{i}", "max_tokens": 4}}\n' for i in range(n))


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    """Wait for a condition (not a duration): the test never assumes how fast the machine is."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_process_substitution_is_read_once_and_answered(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(5))
    cmd = " ".join(map(str, STREAMRUN)) + f" run <(cat {inp}) -o {tmp_path / 'out.jsonl'} --mock -q"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")) == [f"p{i}" for i in range(5)]


def test_a_named_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(lines(4)))
    writer.start()
    res = streamrun("run", fifo, "-o", tmp_path / "out.jsonl", "--mock", "-q", timeout=60)
    writer.join(timeout=10)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4


def test_stdin_lines_go_as_they_arrive_and_sigterm_ends_the_run_while_stdin_is_open(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([*STREAMRUN, "run", "-", "-o", out, "--mock", "-q"], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(lines(3))
        proc.stdin.flush()  # three lines, far fewer than any batch, and the pipe stays open
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 3, "the three records")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        err = proc.stderr.read()
        assert "Traceback" not in err and "Fatal" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert [r["custom_id"] for r in read_jsonl(out)] == ["p0", "p1", "p2"]


def test_a_sweep_over_a_pipe_is_refused(tmp_path):
    res = streamrun("run", "-", "-o", tmp_path / "out.jsonl", "--mock", "-c", "1,2", input=lines(2))
    assert res.returncode == 2 and "can be read only once" in res.stderr


def test_an_input_line_over_max_line_bytes_is_an_invalid_record(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "small", "prompt": "x", "max_tokens": 4},
                                              {"custom_id": "big", "prompt": "y" * 5000, "max_tokens": 4}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--max-line-bytes", "2KiB")
    assert res.returncode == 1
    records = read_jsonl(tmp_path / "out.jsonl")
    assert {r["status"] for r in records} == {"ok", "error"}
    bad = next(r for r in records if r["status"] == "error")
    assert bad["error"]["type"] == "invalid_input" and "in.jsonl:2" in res.stderr


def test_dash_o_writes_records_to_stdout_and_the_summary_to_stderr(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "prompt": "x", "max_tokens": 3}
                                              for i in range(4)])
    res = streamrun("run", inp, "-o", "-", "--mock", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    import json

    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["custom_id"] for r in records) == ["p0", "p1", "p2", "p3"]
    assert "4 records: 4 ok" in res.stderr
    assert not (tmp_path / "-").exists() and not list(tmp_path.glob("*.summary.json"))
    refused = streamrun("run", inp, "-o", "-", "--mock", "--resume", cwd=tmp_path)
    assert refused.returncode == 2 and "--resume needs an output file" in refused.stderr


def test_max_tokens_is_the_param_shortcut(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "prompt": "x"},
                                              {"custom_id": "b", "prompt": "y", "max_tokens": 5}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--max-tokens", "3")
    assert res.returncode == 0, res.stderr
    tokens = {r["custom_id"]: r["usage"]["completion_tokens"] for r in read_jsonl(tmp_path / "out.jsonl")}
    assert tokens == {"a": 3, "b": 5}  # a line's own max_tokens wins
