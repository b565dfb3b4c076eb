"""The deployment files run as written: Dockerfile, Kubernetes manifests, Slurm array, systemd units.

Nothing here needs Docker, Kubernetes, Slurm or systemd running:
- the Dockerfile is parsed and its `pip install` repeated in a fresh virtualenv (slow: ~1 min);
- each Kubernetes manifest's job file is taken out of its ConfigMap, checked (absolute paths under
  the container's mounts, the container's args naming the mounted file) and then run as the pod
  would, with the container's paths mapped into a scratch directory and the embedded mock;
- the Slurm script's tasks run as Slurm would start them, in a fresh copy without out/
  (`make test-slurm` submits it to a real one-node cluster);
- the systemd units go through `systemd-analyze verify` where it is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path

import pytest

from runner.config.jobfile import load_job
from tests.helpers import ROOT

JOBS = ROOT / "jobs"
DEPLOY = ROOT / "deploy"
SAMPLE = ROOT / "sample_inputs" / "prompts.jsonl"
VENV_BIN = Path(sys.executable).parent

with warnings.catch_warnings():  # the marker is not registered in pyproject (yet); `-m "not slow"` skips it
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    slow = pytest.mark.slow


def streamrun_bin() -> str:
    exe = VENV_BIN / "streamrun"
    if not exe.exists():
        pytest.skip(f"no streamrun next to {sys.executable} (pip install -e . first)")
    return str(exe)


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_ids() -> list[str]:
    from runner.inputs.items import iter_items
    return [item.custom_id for item in iter_items([str(SAMPLE)])]


def assert_one_ok_record_each(records: list[dict], ids: list[str]) -> None:
    got = sorted(r["custom_id"] for r in records)
    assert got == sorted(ids), "every input exactly once"
    bad = [r for r in records if r.get("status") != "ok"]
    assert not bad, bad[:2]


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage; continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment lines inside a continuation are dropped by Docker
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    last_from = max(i for i, (instr, _) in enumerate(out) if instr == "FROM")
    return out[last_from:]


def one(instrs, name) -> str:
    values = [args for instr, args in instrs if instr == name]
    assert values, f"no {name} in the Dockerfile"
    return values[-1]


def pip_installs(instrs) -> list[tuple[str, list[str]]]:
    """(WORKDIR at that point, pip install arguments) of every `pip install` in a RUN."""
    found, workdir = [], "/"
    for instr, args in instrs:
        if instr == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif instr == "RUN":
            for part in re.split(r"&&|;", args):
                words = shlex.split(part)
                if words[:2] == ["pip", "install"] or words[:4] in (["python", "-m", "pip", "install"],
                                                                    ["python3", "-m", "pip", "install"]):
                    found.append((workdir, words[words.index("install") + 1:]))
    return found


def extras_of(spec: str) -> set[str]:
    m = re.fullmatch(r"([^\[]+)\[([^\]]*)\]", spec)
    return {e.strip() for e in m.group(2).split(",")} if m else set()


def test_dockerfile_entrypoint_signal_user_and_install():
    instrs = dockerfile()
    base = one(instrs, "FROM")
    assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", base), f"slim Python base, not {base!r}"
    assert json.loads(one(instrs, "ENTRYPOINT")) == ["streamrun"], "exec form, so streamrun is PID 1 and gets SIGTERM"
    assert one(instrs, "STOPSIGNAL") == "SIGTERM"
    user = one(instrs, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user!r}: numeric (runAsNonRoot can check it) and not root"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"USER {user!r}: group not root"
    names = [n for n, _ in instrs]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN"), \
        "USER comes after every RUN (the image runs as it)"
    assert one(instrs, "WORKDIR") == "/data"
    assert "/data" in json.loads(one(instrs, "VOLUME"))
    installs = pip_installs(instrs)
    assert len(installs) == 1, installs
    _, args = installs[0]
    specs = [a for a in args if not a.startswith("-")]
    assert len(specs) == 1 and extras_of(specs[0]) >= {"report", "speed"}, specs


def dockerignore() -> list[str]:
    return [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
            if l.strip() and not l.lstrip().startswith("#")]


def docker_ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, near enough: a pattern matches a path (or a folder above it) from the context's root,
    `*` within one segment; `**/x` matches x in any folder."""
    import fnmatch
    parts = rel.split("/")
    for pat in patterns:
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(part, pat[3:]) for part in parts):
                return True
            continue
        depth = pat.count("/") + 1
        if depth <= len(parts) and fnmatch.fnmatch("/".join(parts[:depth]), pat):
            return True
    return False


def test_dockerignore_keeps_local_state_out_and_the_sources_in():
    patterns = dockerignore()
    for needed in (".venv", ".interop", "out", "results*", ".git", "**/__pycache__"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    for instr, args in dockerfile():
        if instr == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for src in words[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the checkout"
                assert not docker_ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    for rel in ("pyproject.toml", "README.md", "runner/cli/main.py", "runner/report/__init__.py"):
        assert not docker_ignored(rel, patterns), rel
    for rel in (".venv/bin/python", "out/x.jsonl", "results.jsonl", "runner/__pycache__/x.pyc", ".git/HEAD"):
        assert docker_ignored(rel, patterns), rel


def python_for(base: str) -> str:
    version = re.match(r"python:(3\.\d+)", base).group(1)
    if sys.version_info[:2] == tuple(map(int, version.split("."))):
        return sys.executable
    return shutil.which(f"python{version}") or sys.executable


def build_context(instrs, root: Path) -> None:
    """The image's files: each COPY (relative to the WORKDIR of its time) into root/, less .dockerignore's."""
    patterns = dockerignore()
    skip = lambda folder, names: [n for n in names
                                  if docker_ignored(os.path.relpath(os.path.join(folder, n), ROOT), patterns)]
    workdir = "/"
    for instr, args in instrs:
        if instr == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif instr == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            srcs, dest = words[:-1], words[-1]
            target = root / os.path.join(workdir, dest).lstrip("/")
            into_dir = dest.endswith("/") or dest in (".", "./") or len(srcs) > 1
            for src in srcs:
                path = ROOT / src
                to = target / path.name if into_dir else target
                to.parent.mkdir(parents=True, exist_ok=True)
                if path.is_dir():
                    shutil.copytree(path, to, ignore=skip)
                else:
                    shutil.copy2(path, to)


@slow
def test_dockerfile_install_in_a_fresh_venv(tmp_path):
    """The Dockerfile's `pip install` over the files it COPYs, in a fresh venv: the entrypoint runs, the
    extras import, and the installed package (not the checkout) serves a run against the embedded mock."""
    instrs = dockerfile()
    python = python_for(one(instrs, "FROM"))
    root, venv = tmp_path / "image", tmp_path / "venv"
    build_context(instrs, root)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_NO_CACHE_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for workdir, args in pip_installs(instrs):
        args = [a for a in args if a != "--no-cache-dir"]  # here the pip cache may help
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", *args], cwd=root / workdir.lstrip("/"),
                             env=env, capture_output=True, text=True, timeout=300)
        if res.returncode and re.search(r"NewConnectionError|Temporary failure in name resolution|"
                                        r"Network is unreachable|No matching distribution found", res.stderr):
            pytest.skip(f"no package index reachable: {res.stderr.strip().splitlines()[-1]}")
        assert res.returncode == 0, res.stdout + res.stderr

    exe = venv / "bin" / "streamrun"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert res.returncode == 0 and "Usage: streamrun" in res.stdout, res.stderr
    probe = ("import runner, uvloop, plotly, jinja2, sys; from runner.report import build; "
             "print(runner.__file__)")
    res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).is_relative_to(venv), f"runner imported from {res.stdout.strip()}"

    out = tmp_path / "data" / "out.jsonl"
    res = subprocess.run([str(exe), "run", str(SAMPLE), "-o", str(out), "--mock", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert_one_ok_record_each(read_jsonl(out), sample_ids())
    res = subprocess.run([str(exe), "report", str(out), "--html", str(tmp_path / "r.html")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0 and (tmp_path / "r.html").stat().st_size > 0, res.stderr


def test_docker_run_with_separate_jobs_and_data_mounts(tmp_path):
    """The docs' `docker run ... -v jobs:/jobs:ro -v data:/data ... job /jobs/nightly.toml --set ...`:
    with the overrides the paths land on /data (the shipped file's are relative to it: /sample_inputs)."""
    text = (ROOT / "docs" / "scaling-out.md").read_text().replace("\\\n", " ")  # continuation lines joined
    m = re.search(r"docker run [^\n]*job /jobs/nightly\.toml[^\n]*", text)
    assert m, "docs/scaling-out.md: no `docker run ... job /jobs/nightly.toml` command"
    words = shlex.split(m.group(0))
    sets = tuple(words[i + 1] for i, w in enumerate(words) if w == "--set")
    cfg, _ = load_job(str(JOBS / "nightly.toml"), sets, environ={})
    for path in (*cfg.inputs, cfg.output.path, cfg.output.summary_path):
        assert path.startswith("/data/"), path
    plain, _ = load_job(str(JOBS / "nightly.toml"), environ={})
    assert not plain.inputs[0].startswith("/data/")  # which is why the overrides are there


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------

def manifests(name: str) -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the manifests: pip install pyyaml")
    return [d for d in yaml.safe_load_all((JOBS / name).read_text()) if d]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def mounted_files(docs: list[dict], pod: dict, container: dict) -> dict[str, str]:
    """Container path -> content, for every ConfigMap key mounted into the container."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert name in config_maps, f"ConfigMap {name} is not in the file"
            for key, content in config_maps[name].items():
                files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
    return files


def under(path: str, mounts: list[dict]) -> dict | None:
    for mount in mounts:
        root = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(root):
            return mount
    return None


K8S = {"k8s-cronjob.yaml": "CronJob", "k8s-indexed-job.yaml": "Job"}


def workload(name: str):
    docs = manifests(name)
    (doc,) = [d for d in docs if d["kind"] == K8S[name]]
    pod = pod_spec(doc)
    (container,) = pod["containers"]
    args = container["args"]
    job_path = args[args.index("job") + 1]
    return docs, doc, pod, container, job_path


def image_uid() -> int:
    return int(one(dockerfile(), "USER").partition(":")[0])


@pytest.mark.parametrize("name", sorted(K8S))
def test_k8s_job_file_is_mounted_and_its_paths_are_on_the_volumes(name, tmp_path):
    docs, doc, pod, container, job_path = workload(name)
    files = mounted_files(docs, pod, container)
    assert job_path in files, f"args name {job_path}, but the mounts hold {sorted(files)}"
    assert container.get("command") is None, "the image's ENTRYPOINT (streamrun) runs the args"
    assert "streamrun" in container["image"]
    mounts = container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    raw = tomllib.loads(files[job_path])
    paths = [*raw["inputs"], raw["output"], *([raw["summary"]] if "summary" in raw else [])]
    for path in paths:
        assert os.path.isabs(path), f"{path}: relative paths are relative to the job file, {job_path}"
        assert under(path, mounts), f"{path} is under no mountPath of {[m['mountPath'] for m in mounts]}"
    for path in paths[len(raw["inputs"]):]:
        mount = under(path, mounts)
        assert not mount.get("readOnly") and "persistentVolumeClaim" in volumes[mount["name"]], \
            f"{path}: outputs go to the writable data volume"
    for path in raw["inputs"]:
        mount = under(path, mounts)
        if "configMap" in volumes[mount["name"]]:
            assert any(Path(f).match(path) for f in files), f"{path} matches no file of the ConfigMap"

    local = tmp_path / Path(job_path).name
    local.write_text(files[job_path])
    cfg, _ = load_job(str(local), environ={})  # validates every key, as `streamrun job` does
    assert cfg.inputs == tuple(raw["inputs"]) and cfg.output.path == raw["output"]

    sec = pod["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == image_uid() and sec["fsGroup"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] > cfg.load.drain_timeout_s, "drain, then write the summary"


def test_k8s_indexed_job_shard_count_and_sample_inputs():
    docs, doc, pod, container, job_path = workload("k8s-indexed-job.yaml")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert doc["spec"]["completionMode"] == "Indexed"
    assert int(env["STREAMRUN_SHARD_COUNT"]) == doc["spec"]["completions"]
    files = mounted_files(docs, pod, container)
    assert files["/jobs/prompts.jsonl"] == SAMPLE.read_text(encoding="utf-8"), \
        "the ConfigMap's prompts.jsonl is sample_inputs/prompts.jsonl (copy it over when that changes)"
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    (data,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert "ReadWriteMany" in claims[data["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]


class Pod:
    """A container's filesystem mapped into a scratch directory: /jobs, /data -> tmp/jobs, tmp/data."""

    def __init__(self, tmp: Path, mounts: list[dict]):
        self.tmp, self.roots = tmp, [m["mountPath"].rstrip("/") for m in mounts]
        for root in self.roots:
            (tmp / root.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def map(self, text: str) -> str:
        for root in self.roots:
            text = re.sub(rf"(?<![\w/.]){re.escape(root)}/", f"{self.tmp}{root}/", text)
        return text

    def path(self, container_path: str) -> Path:
        return Path(self.map(container_path))

    def write_configmaps(self, files: dict[str, str]) -> None:
        for path, content in files.items():
            self.path(path).write_text(self.map(content) if path.endswith(".toml") else content,
                                       encoding="utf-8")

    def env(self, container: dict, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "STREAMRUN_"))}
        env.pop("OPENAI_API_KEY", None)
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env


def test_k8s_cronjob_runs_as_the_pod_would(tmp_path):
    """The CronJob's args over its ConfigMap and volume, against the embedded mock: one ok record per input."""
    docs, doc, pod, container, job_path = workload("k8s-cronjob.yaml")
    exe = streamrun_bin()
    box = Pod(tmp_path, container["volumeMounts"])
    box.write_configmaps(mounted_files(docs, pod, container))
    raw = tomllib.loads(box.path(job_path).read_text())
    inputs_dir = box.path(raw["inputs"][0]).parent
    inputs_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE, inputs_dir / "prompts.jsonl")  # what the docs say to put on the volume
    mock = ["--set", f'mock.model="{raw["model"]}"', "--set", "mock.ttft=0.0", "--set", "mock.tokens_per_s=0.0"]
    args = [box.map(a) for a in container["args"]]
    res = subprocess.run([exe, *args, *mock], env=box.env(container), capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    out = box.path(raw["output"].replace("{job}", raw["name"]).replace("{date}", today()))
    assert_one_ok_record_each(read_jsonl(out), sample_ids())
    assert box.path(raw["summary"].replace("{job}", raw["name"]).replace("{date}", today())).exists()


def test_k8s_indexed_job_and_merge_run_as_the_pods_would(tmp_path):
    """Each index's pod (JOB_COMPLETION_INDEX + the manifest's env), then the merge Job's shell command."""
    docs, doc, pod, container, job_path = workload("k8s-indexed-job.yaml")
    exe = streamrun_bin()
    box = Pod(tmp_path, container["volumeMounts"])
    box.write_configmaps(mounted_files(docs, pod, container))
    args = [box.map(a) for a in container["args"]]
    count = doc["spec"]["completions"]
    procs = [subprocess.Popen([exe, *args], env=box.env(container, JOB_COMPLETION_INDEX=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i in range(count)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    shards = sorted(box.path("/data/out").glob(f"sample-{today()}-*of{count}.jsonl"))
    assert len(shards) == count

    (merge_doc,) = manifests("k8s-indexed-merge.yaml")
    merge_pod = pod_spec(merge_doc)
    (merger,) = merge_pod["containers"]
    assert mounted_files(docs, merge_pod, merger)["/jobs/prompts.jsonl"]  # the same ConfigMap
    assert [v["persistentVolumeClaim"] for v in merge_pod["volumes"] if "persistentVolumeClaim" in v] == \
        [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert merger["command"][0] == "sh"
    script = [box.map(a) for a in merger["args"]]
    res = subprocess.run([*merger["command"], *script], env=box.env(merger), capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "missing=0" in res.stderr and "duplicates=0" in res.stderr
    assert_one_ok_record_each(read_jsonl(box.path(f"/data/out/sample-{today()}-all.jsonl")), sample_ids())


# ---------------------------------------------------------------------------
# Slurm
# ---------------------------------------------------------------------------

SLURM = JOBS / "slurm-array.sh"


def sbatch_options() -> dict[str, str]:
    opts = {}
    for line in SLURM.read_text().splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = line.split()[1].partition("=")
            opts[key] = value
    return opts


def test_slurm_script_logs_to_a_directory_that_exists():
    """Slurm does not create directories: a log under out/ (absent in a fresh clone) fails every task at launch."""
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    opts = sbatch_options()
    for key in ("--output", "--error", "-o", "-e"):
        if key in opts:
            assert "/" not in opts[key] or opts[key].startswith("/dev/"), \
                f"{key}={opts[key]}: a directory Slurm will not create"
    assert opts["--array"] == "0-3"


def test_slurm_tasks_run_as_slurm_starts_them(tmp_path):
    """Each array task (SLURM_* as Slurm sets them, cwd = the submit dir of a fresh copy with no out/), then
    the merge the script's comment gives."""
    submit = tmp_path / "clone"
    for rel in ("jobs", "sample_inputs"):
        shutil.copytree(ROOT / rel, submit / rel)
    (submit / ".venv").symlink_to(VENV_BIN.parent)
    streamrun_bin()
    assert not (submit / "out").exists()
    low, high = map(int, sbatch_options()["--array"].split("-"))
    for task in range(low, high + 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "STREAMRUN_"))}
        env.update(SLURM_SUBMIT_DIR=str(submit), SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_JOB_ID="7",
                   SLURM_ARRAY_TASK_COUNT=str(high - low + 1), SLURM_ARRAY_TASK_MIN=str(low),
                   SLURM_ARRAY_TASK_MAX=str(high), SLURM_ARRAY_TASK_STEP="1")
        res = subprocess.run(["bash", str(SLURM)], env=env, cwd="/", capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
    merge = re.search(r"streamrun merge .*", SLURM.read_text()).group(0)
    res = subprocess.run(f"{VENV_BIN}/{merge}", shell=True, cwd=submit, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert_one_ok_record_each(read_jsonl(submit / "out" / "all.jsonl"), sample_ids())


# ---------------------------------------------------------------------------
# Makefile
# ---------------------------------------------------------------------------

def test_make_clean_removes_what_the_sample_jobs_write_and_nothing_of_yours(tmp_path):
    """`make run`'s job and the sharded sample (a shard of four, unsharded, the merge its comment gives) in a
    fresh copy, then `make clean`: the copy's own files are left, and the user's, nothing else."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    clone = tmp_path / "clone"
    for rel in ("jobs", "sample_inputs"):
        shutil.copytree(ROOT / rel, clone / rel)
    shutil.copy(ROOT / "Makefile", clone / "Makefile")

    def tree() -> set[str]:
        return {str(p.relative_to(clone)) for p in clone.rglob("*")}

    fresh = tree()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "STREAMRUN_"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's streamrun, run from the copy
    cli = [sys.executable, "-m", "runner.cli"]
    for args, extra in ((["job", "jobs/sample.toml"], {}),
                        (["job", "jobs/sharded.toml"], {"JOB_COMPLETION_INDEX": "0", "STREAMRUN_SHARD_COUNT": "4"}),
                        (["job", "jobs/sharded.toml"], {})):
        res = subprocess.run([*cli, *args], cwd=clone, env={**env, **extra}, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
    merge = re.search(r"streamrun merge (.*)", SLURM.read_text()).group(1)
    subprocess.run(f"{shlex.join(cli)} merge {merge} --missing out/missing.jsonl", shell=True, cwd=clone, env=env,
                   capture_output=True, timeout=60)  # three shards of four are missing: it says so, and writes
    (clone / "results.jsonl.lock").write_text("123\n")  # as a run killed with -9 leaves it
    written = tree() - fresh
    assert {"results.jsonl", "results.summary.json", "results.server_metrics.jsonl", "out/all.jsonl",
            f"out/sample-{today()}-0of4.jsonl", f"out/sample-{today()}-all.jsonl"} <= written

    mine = {"report.html", "notes.jsonl", "out/mine.jsonl", "out/keep"}  # made by hand
    for name in mine:
        (clone / name).write_text("mine")
    make = ["make", "-s", "clean", "VENV=.venv-not-here"]  # leave the shared venv alone
    res = subprocess.run(make, cwd=clone, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert tree() == fresh | mine | {"out"}
    for name in ("out/mine.jsonl", "out/keep"):
        (clone / name).unlink()
    assert subprocess.run(make, cwd=clone, timeout=60).returncode == 0
    assert tree() == fresh | {"report.html", "notes.jsonl"}  # an empty out/ goes too


# ---------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------

UNITS = [DEPLOY / "streamrun-nightly.service", DEPLOY / "streamrun-nightly.timer"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_has_no_comment_after_a_value(unit):
    """systemd reads `TimeoutStopSec=75   # ...` as the value `75   # ...` and ignores the line."""
    for number, line in enumerate(unit.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or stripped.startswith("["):
            continue
        key, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key), f"{unit.name}:{number}: not Key=value"
        assert not re.search(r"\s[#;]", value), f"{unit.name}:{number}: comment after a value: {line!r}"


def test_units_verify(tmp_path):
    """`systemd-analyze verify` on copies whose ExecStart points at a stub in tmp (it checks the binary exists)."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    service = UNITS[0].read_text()
    m = re.search(r"^ExecStart=(\S+)", service, re.M)
    assert m and m.group(1) == "/srv/streamrun/.venv/bin/streamrun", "docs/unattended.md's layout: a checkout at /srv/streamrun"
    stub = tmp_path / "streamrun"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    (tmp_path / UNITS[0].name).write_text(service.replace(f"ExecStart={m.group(1)}", f"ExecStart={stub}"))
    shutil.copy(UNITS[1], tmp_path / UNITS[1].name)
    paths = [str(tmp_path / u.name) for u in UNITS]
    res = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    output = res.stdout + res.stderr
    if res.returncode and "streamrun-nightly" not in output:  # failed on this machine, not on the units
        pytest.skip(f"systemd-analyze cannot run here: {output.strip().splitlines()[-1]}")
    # verify exits 0 on a line it ignores ("Failed to parse ..., ignoring"): any mention of our files fails
    assert res.returncode == 0 and "streamrun-nightly" not in output, output


# ---------------------------------------------------------------------------
# The docs pages (docs/scaling-out.md, docs/unattended.md)
# ---------------------------------------------------------------------------

def test_the_docs_name_files_that_exist():
    text = "".join((ROOT / "docs" / page).read_text() for page in ("scaling-out.md", "unattended.md"))
    named = set(re.findall(r"(?<![\w/.-])((?:jobs|deploy)/[\w.-]+\.(?:yaml|sh|toml|service|timer))", text))
    assert {"jobs/k8s-cronjob.yaml", "jobs/k8s-indexed-job.yaml", "jobs/slurm-array.sh",
            "deploy/streamrun-nightly.service", "deploy/streamrun-nightly.timer", "deploy/slurm-up.sh"} <= named
    written = set(re.findall(r"<!-- example: file (\S+) -->", text))  # a job file the page itself writes
    for rel in named - written:
        if Path(rel).stem.isupper():  # a placeholder such as jobs/NAME.toml
            continue
        assert (ROOT / rel).exists(), rel
    assert "make test-slurm" in text and "docker build" in text and "OPENAI_API_KEY" in text
