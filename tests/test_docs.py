"""The docs and the code agree: docs/FORMATS.md names the record's fields and error types both ways,
the generated CLI reference covers every option and command, the site lists every page, and the
README stays a short first screen.

(docs/SUMMARY.md's keys against the written summary: tests/outputs/test_summary.py; every example of
the docs runs: tests/test_examples.py.)
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import pkgutil
import re
import shlex
import tomllib

import pytest

import runner
import runner.record as record_module
from runner.config.options import OPTIONS
from runner.record import Metrics, Record, RecordError
from runner.stream.errors import RequestError
from tests.helpers import ROOT, read_jsonl, streamrun

FORMATS = (ROOT / "docs" / "FORMATS.md").read_text()


def _strip_comments(text: str) -> str:
    """JSON with `// comments` -> JSON; a `//` inside a string (a URL) stays."""
    out = []
    for line in text.splitlines():
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif line.startswith("//", i):
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _example_record() -> tuple[dict, str]:
    """The documented result record (the first ```json block) as a dict, and its raw text."""
    raw = FORMATS.split("```json", 1)[1].split("```", 1)[0]
    return json.loads(_strip_comments(raw)), raw


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_documented_record_has_the_fields_of_record_metrics_and_error():
    example, raw = _example_record()
    assert set(example) == _names(Record), \
        f"undocumented: {_names(Record) - set(example)}; not fields: {set(example) - _names(Record)}"
    assert list(example) == [f.name for f in dataclasses.fields(Record)], "the documented order is the written one"
    metrics = example["metrics"]
    assert set(metrics) == _names(Metrics), \
        f"undocumented: {_names(Metrics) - set(metrics)}; not fields: {set(metrics) - _names(Metrics)}"
    # the error object is shown in the comment of its line: {"type": ..., "status_code": ..., ...}
    line = next(x for x in raw.splitlines() if x.strip().startswith('"error"'))
    shown = json.loads(re.search(r"\{.*\}", line.split("//", 1)[1]).group(0))
    assert set(shown) == _names(RecordError), \
        f"undocumented: {_names(RecordError) - set(shown)}; not fields: {set(shown) - _names(RecordError)}"


def test_the_documented_choice_has_the_fields_of_choice():
    choice = getattr(record_module, "Choice", None)
    if choice is None:
        pytest.skip("no runner.record.Choice")
    m = re.search(r'\{("index"(?:,\s*"[a-z_]+")*)\}', FORMATS)
    assert m, "docs/FORMATS.md: no {\"index\", ...} list of a choice's keys"
    shown = set(re.findall(r'"([a-z_]+)"', m.group(1)))
    assert shown == _names(choice), f"undocumented: {_names(choice) - shown}; not fields: {shown - _names(choice)}"


def _documented_error_types() -> set[str]:
    para = FORMATS.split("Error `type`s", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", para))


def _import_everything() -> None:
    """So that a RequestError subclass defined in any module is found."""
    for mod in pkgutil.walk_packages(runner.__path__, "runner."):
        if mod.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            importlib.import_module(mod.name)
        except ModuleNotFoundError as exc:  # an optional extra that is not installed here
            if (exc.name or "runner").split(".")[0] == "runner":
                raise


def _subclasses(cls) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


# A type written as a literal (not a RequestError subclass's `type`): RecordError("x", ...),
# a dict {"type": "x", "status_code": ...} turned into a record's error, or the base class raised as is.
_LITERALS = (
    re.compile(r"RecordError\(\s*(?:type\s*=\s*)?[\"']([a-z_]+)[\"']"),
    re.compile(r"\{\s*[\"']type[\"']\s*:\s*[\"']([a-z_]+)[\"']\s*,\s*[\"']status_code[\"']"),
)


def _code_error_types() -> dict[str, str]:
    """error type -> where the code produces it (runner/mock is the server, not the runner)."""
    _import_everything()
    found = {sub.type: f"{sub.__module__}.{sub.__qualname__}" for sub in _subclasses(RequestError)
             if isinstance(sub.__dict__.get("type", None), str)}
    for path in sorted((ROOT / "runner").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("runner/mock/"):
            continue
        source = path.read_text()
        for pattern in _LITERALS:
            for m in pattern.finditer(source):
                found.setdefault(m.group(1), rel)
        if re.search(r"(?<![\w.])(?:raise\s+|=\s*)RequestError\(", source):
            found.setdefault(RequestError.type, rel)
    return found


def test_every_documented_error_type_is_produced_and_every_produced_one_documented():
    documented = _documented_error_types()
    produced = _code_error_types()
    assert "http_error" in documented and "timeout" in documented  # the paragraph was found
    assert documented - set(produced) == set(), "documented in docs/FORMATS.md but produced nowhere"
    undocumented = {t: where for t, where in produced.items() if t not in documented}
    assert not undocumented, f"produced but not in docs/FORMATS.md: {undocumented}"


def test_the_readmes_rerun_of_missing_inputs_works_for_the_sample_job_as_written(tmp_path):
    """Scaling out: shards of jobs/sharded.toml, merge --missing, then the docs' rerun command."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    (command,) = {line.split("#")[0].strip() for page in pages for line in page.read_text().splitlines()
                  if line.startswith("streamrun run out/missing.jsonl")}
    env = {"PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "OPENAI_MODEL": ""}
    out = tmp_path / "out"
    res = streamrun("job", ROOT / "jobs" / "sharded.toml", "--set", f'output = "{out}/sample-{{shard}}.jsonl"',
                    env={**env, "STREAMRUN_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "0"})
    assert res.returncode == 0, res.stderr
    res = streamrun("merge", *sorted(str(p) for p in out.glob("sample-*of4.jsonl")), "-o", "out/all.jsonl",
                    "--inputs", ROOT / "sample_inputs" / "prompts.jsonl", "--missing", "out/missing.jsonl",
                    env=env, cwd=tmp_path)
    missing = read_jsonl(out / "missing.jsonl")
    assert res.returncode == 1 and missing, res.stderr  # one shard of four: the others' inputs are missing
    args = shlex.split(command)
    assert args[:2] == ["streamrun", "run"]
    res = streamrun(*args[1:], env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out / "rerun.jsonl")
    assert len(records) == len(missing) and all(r["status"] == "ok" for r in records)


# -- the site, the CLI reference, the README -------------------------------------------


def _cli_reference():
    """docs/hooks/cli_reference.py, the mkdocs hook that writes the CLI reference (loaded without mkdocs)."""
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_has_every_command_and_every_option_of_each():
    import click

    from runner.cli.main import main

    page = _cli_reference().markdown()
    root = click.Context(main, info_name="streamrun")
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        section = page.split(f"\n## streamrun {name}\n", 1)[1].split("\n## ", 1)[0]
        for param in command.get_params(click.Context(command, parent=root)):
            if isinstance(param, click.Option) and not param.hidden:
                for flag in [*param.opts, *param.secondary_opts]:
                    assert f"`{flag}`" in section, f"streamrun {name} {flag}: not in the CLI reference"
    for option in OPTIONS:
        if option.key:
            assert f"| `{option.key}` |" in page, option.key


def test_the_site_lists_every_page_and_generates_the_cli_reference():
    yaml = pytest.importorskip("yaml", reason="PyYAML reads mkdocs.yml: pip install pyyaml")
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from (pages(value) if isinstance(value, list) else [value])

    listed = set(pages(site["nav"]))
    written = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert listed - written == {_cli_reference().PAGE}, "nav names a page that is neither written nor generated"
    assert written - listed == set(), "pages not in mkdocs.yml's nav"
    assert site["hooks"] == ["docs/hooks/cli_reference.py"] and site["strict"] is True
    assert not (ROOT / "docs" / _cli_reference().PAGE).exists(), "the CLI reference is generated, never committed"


def test_make_docs_builds_strictly_with_its_own_extra():
    makefile = (ROOT / "Makefile").read_text()
    docs = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in docs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {d.split(">")[0].split("[")[0] for d in extras["docs"]} == {"mkdocs-material", "mkdocstrings"}
    for stamp in (".run", ".test"):  # what `make run` and `make test` install
        recipe = makefile.split(f"$(VENV)/{stamp}:", 1)[1].split("\n\n", 1)[0]
        assert "docs" not in re.search(r"-e '\.\[([^\]]*)\]'", recipe).group(1).split(","), stamp
    assert "/site/" in (ROOT / ".gitignore").read_text().split()


def test_the_readme_is_a_first_screen_that_links_the_docs():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 300, f"README.md: {len(lines)} lines; the details go to docs/"
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]
    top = "\n".join(lines[:60])
    assert "PATH" in top and ".venv/bin" in top, "the first screen says how to put streamrun on PATH"
    assert "streamrun mock" in top and "--mock" in top, "the first screen says how to start the mock"
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test"), "CI runs the README's test command"
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).exists(), f"README.md links {target}, which does not exist"
