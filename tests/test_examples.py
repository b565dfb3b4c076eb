"""Every example in README.md and docs/**/*.md runs, and every output shown is checked or says why not.

Each page's fenced blocks run in order, in a temporary directory of their
own that holds copies of sample_inputs/ and jobs/ and a prompts.jsonl (the
sample prompts): ```sh/```bash/```console blocks in bash (`set -e`), ```python
blocks with this interpreter.  `streamrun` on PATH is a shim that runs THIS
checkout's code (the venv's console script may belong to another checkout),
and OPENAI_BASE_URL/OPENAI_MODEL point at a mock this module starts, so the
commands that a reader points at a real server run against the mock.

An HTML comment on the line(s) before a block says what it is (the table is in
docs/development.md, "These docs"):

    <!-- example: skip (why) -->         not run
    <!-- example: exit N -->             must exit N (else 0)
    <!-- example: file NAME -->          written to NAME for the blocks after it
    <!-- example: same-as PATH -->       equal to the repository file PATH
    <!-- example: output -->             a text block: its lines appear, in order, in what the
                                         block before printed (`...` is any text)
    <!-- example: output, numbers vary --> the same, every number free
    <!-- example: measured (how) -->     a text block of measured results
    <!-- example: illustration (why) --> a text block that is not (or cannot be) a command's output

A ```text (or bare ```) block without one of the last four fails: an output
shown is checked, or the page says why it is not.  The session ends with a
tally: blocks run, skipped by reason, outputs checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import HANG_GUARD_S, ROOT, STREAMRUN

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"sh", "bash", "console", "python"}
TEXT = {"", "text"}
TOOLS = ("jq", "curl", "column")  # what some blocks pipe through besides streamrun: skipped where missing
BLOCK_TIMEOUT_S = 120.0  # a hang guard: the examples use small inputs and take a second or two each
DIRECTIVE = re.compile(r"<!--\s*example:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
# A number, with the unit letters that follow it in durations (4m35s, 0.69s, 12ms): "numbers vary" frees them.
NUMBER = re.compile(r"(?:\d[\d,]*(?:\.\d+)?(?:ms|µs|us|h|m|s)?)+")


class Tally:
    """What the runner did with the blocks; a plugin for the session, so pytest prints it at the end."""

    def __init__(self) -> None:
        self.ran = 0
        self.outputs = 0
        self.skipped: Counter = Counter()  # reason -> blocks
        self.unchecked: Counter = Counter()  # "measured" / "illustration" -> text blocks

    def lines(self) -> list[str]:
        unchecked = ", ".join(f"{n} {kind}" for kind, n in sorted(self.unchecked.items())) or "none"
        return [f"docs examples: ran {self.ran} blocks, skipped {sum(self.skipped.values())}; "
                f"{self.outputs} outputs checked; text blocks not outputs: {unchecked}",
                *(f"  skipped {n}: {reason}" for reason, n in self.skipped.most_common())]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for line in self.lines():
            terminalreporter.write_line(line)


EXAMPLES = Tally()


@pytest.fixture(scope="module", autouse=True)
def tally(request):
    if not request.config.pluginmanager.is_registered(EXAMPLES):
        request.config.pluginmanager.register(EXAMPLES, "docs-examples-tally")
    return EXAMPLES


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def directive(self, name: str) -> str | None:
        """The rest of the first directive that starts with `name` ("" when it is all), else None."""
        for d in self.directives:
            if d == name or d.startswith(name + " ") or d.startswith(name + ","):
                return d[len(name):].strip(" ,")
        return None


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, each with the example directives on the comment lines right above it."""
    lines = page.read_text().splitlines()
    out, pending, i = [], [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            indent, fence, lang = m.groups()
            body, j = [], i + 1
            while j < len(lines) and lines[j].strip() != fence:
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
                j += 1
            out.append(Block(page, i + 1, lang.lower(), "\n".join(body) + "\n", pending))
            pending, i = [], j + 1
            continue
        stripped = lines[i].strip()
        if stripped.startswith("<!--"):
            d = DIRECTIVE.search(stripped)
            if d:
                pending.append(d.group(1))
        elif stripped:
            pending = []
        i += 1
    return out


def matches(expected: str, actual: str, numbers_vary: bool) -> str | None:
    """None when every expected line matches an actual line, in order; else the first line that did not."""
    def norm(line: str) -> str:
        line = line.rstrip()
        return NUMBER.sub("#", line) if numbers_vary else line

    rest = iter([norm(a) for a in actual.splitlines()])
    for shown in expected.splitlines():
        if shown.strip() in ("", "..."):
            continue
        pattern = ".*".join(re.escape(part) for part in norm(shown).split("..."))
        if not any(re.fullmatch(pattern, a) for a in rest):
            return shown
    return None


def console_parts(code: str) -> tuple[str, str]:
    """A ```console block: its `$ ` commands, and the output lines shown under them."""
    commands, shown = [], []
    for line in code.splitlines():
        (commands if line.startswith("$ ") else shown).append(line[2:] if line.startswith("$ ") else line)
    return "\n".join(commands) + "\n", "\n".join(shown)


@pytest.fixture(scope="module")
def mock_url():
    """One strict mock for every page, fast (no pacing), in its own process."""
    proc = subprocess.Popen([*STREAMRUN, "mock", "--port", "0", "--ttft", "0.005", "--tokens-per-s", "0",
                             "--alias", "gpt-4o-mini"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        match = re.search(r"(http://\S+)", line)
        assert match, f"mock did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()


def workdir(tmp_path: Path) -> tuple[Path, dict]:
    """What a page's examples need: the checkout's inputs and jobs, and streamrun on PATH as this checkout."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "sample_inputs", work / "sample_inputs")
    shutil.copytree(ROOT / "jobs", work / "jobs")
    shutil.copy(ROOT / "sample_inputs" / "prompts.jsonl", work / "prompts.jsonl")
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "streamrun"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m runner.cli "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "STREAMRUN_", "SLURM_", "JOB_COMPLETION"))}
    env.update(PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), COLUMNS="200",
               OPENAI_API_KEY="sk-example-not-a-key", ANTHROPIC_API_KEY="sk-ant-example-not-a-key")
    return work, env


def run_block(block: Block, work: Path, env: dict) -> subprocess.CompletedProcess:
    if block.lang == "python":
        script = work / f"example_{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, script.name]
    else:
        code = console_parts(block.code)[0] if block.lang == "console" else block.code
        argv = ["bash", "-e", "-c", code]
    return subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def missing_tool(block: Block) -> str | None:
    for tool in TOOLS:
        if block.lang != "python" and re.search(rf"(?<![\w.-]){tool}\b", block.code) and not shutil.which(tool):
            return tool
    return None


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_example_of_the_page_runs(page: Path, mock_url: str, tmp_path: Path) -> None:
    work, env = workdir(tmp_path)
    env.update(OPENAI_BASE_URL=mock_url, OPENAI_MODEL="mock-model")
    last: tuple[Block, str] | None = None  # the last block run and what it printed; None after a skipped one
    for block in blocks(page):
        if block.lang in RUN:
            reason = block.directive("skip")
            tool = missing_tool(block)
            if reason is not None or tool:
                EXAMPLES.skipped[(reason or "").strip("()") or f"needs {tool}, not installed here"] += 1
                last = None
                continue
            res = run_block(block, work, env)
            EXAMPLES.ran += 1
            expected_exit = int(block.directive("exit") or 0)
            assert res.returncode == expected_exit, \
                f"{block.where}: exit {res.returncode}, expected {expected_exit}:\n{block.code}\n{res.stdout[-4000:]}"
            if block.lang == "console":
                shown = console_parts(block.code)[1]
                bad = matches(shown, res.stdout, numbers_vary=True)
                assert bad is None, f"{block.where}: not printed: {bad!r}\n{res.stdout[-4000:]}"
                EXAMPLES.outputs += 1
            last = (block, res.stdout)
        elif block.lang in TEXT:
            kind = block.directive("output")
            if kind is not None:
                if last is None:
                    EXAMPLES.skipped["output of a skipped block"] += 1
                    continue
                bad = matches(block.code, last[1], numbers_vary="numbers vary" in kind)
                assert bad is None, f"{block.where}: this line is not in what {last[0].where} printed: {bad!r}\n" \
                                    f"--- it printed:\n{last[1][-4000:]}"
                EXAMPLES.outputs += 1
            elif block.directive("measured") is not None or block.directive("illustration") is not None:
                EXAMPLES.unchecked["measured" if block.directive("measured") is not None else "illustration"] += 1
            else:
                pytest.fail(f"{block.where}: a text block without <!-- example: output|measured|illustration -->")
        else:  # data: JSON, JSONL, TOML, YAML, cron lines
            name = block.directive("file")
            if name:
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_text(block.code)
            same = block.directive("same-as")
            if same:
                assert block.code.strip() == (ROOT / same).read_text().strip(), \
                    f"{block.where}: differs from {same}; paste the file as it is"


def test_the_runner_reads_directives_and_matches_outputs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- example: skip (needs a real provider) -->\n```sh\nexit 1\n```\n\ntext\n\n"
                    "<!-- example: output, numbers vary -->\n```text\nok 12 ...\n```\n```python\nx = 1\n```\n")
    first, second, third = blocks(page)
    assert (first.lang, first.directive("skip"), first.code) == ("sh", "(needs a real provider)", "exit 1\n")
    assert second.directive("output") == "numbers vary" and third.directives == [] and third.lang == "python"
    printed = "streamrun: starting\nok 3 records: done\nstreamrun: 4 ok, 0 errors in 0.69s\n"
    assert matches("ok 12 ...", printed, numbers_vary=True) is None
    assert matches("ok 12 ...", printed, numbers_vary=False) == "ok 12 ..."
    assert matches("streamrun: 8 ok, 1 errors in 4m35s", printed, numbers_vary=True) is None
    assert matches("streamrun: 4 ok, 0 errors in 0.69s\nok 3 records: done", printed, False) is not None  # order
