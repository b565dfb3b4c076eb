#!/usr/bin/env python3
"""Helpers for `make interop` (interop/run.sh): wait for a server, ask it
directly what it answers, judge streamrun's result records, print the table.

Standard library only, so it runs under any python3.

  check.py wait URL --pid PID [--timeout S] [--key-env NAME]
  check.py probe INPUT --base-url URL --model M --out FILE [--key-env NAME]
  check.py evaluate --server NAME --version V --dir DIR --table FILE [--lacks CHECK=REASON ...]
  check.py fail --server NAME --version V --table FILE --reason TEXT
  check.py table FILE

`evaluate` reads, for each check, DIR/<check>.jsonl (streamrun's records),
DIR/<check>.rc (streamrun's exit status) and, for the error checks,
DIR/<check>.server.json (what `probe` got from the server for the same
request), and appends one row per check to the table file (JSON lines).
`table` prints the rows and exits 1 when any check failed.  A check the
server cannot pass (it lacks the feature, named with --lacks) is "n/a" when
streamrun handled the lack as it should (e.g. no usage: tokens counted from
the events; an over-long prompt the server drops: an error record, not ok).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHECKS = {
    "chat": "chat completions streaming",
    "completions": "completions streaming",
    "usage": "usage (stream_options.include_usage)",
    "unknown_model": "error: unknown model",
    "invalid_request": "error: invalid request",
    "too_long": "error: over-long prompt, not retried",
    "concurrent": "8 concurrent streams: none cut short",
}
CONTEXT_RE = re.compile(r"context|n_ctx|too (long|many tokens)|maximum.*tokens", re.I)


# --------------------------------------------------------------------------- wait / probe

def _request(url: str, body: dict | None, key_env: str | None, timeout: float) -> tuple[int, str, str]:
    """(status, content type, body text) of one GET/POST; HTTP errors are answers too."""
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(key_env) if key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read(200_000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read(200_000).decode("utf-8", "replace")


def cmd_wait(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    last = ""
    while time.monotonic() < deadline:
        if args.pid and not _alive(args.pid):
            print(f"server process {args.pid} exited before it answered {args.url}", file=sys.stderr)
            return 1
        try:
            status, _, _ = _request(args.url, None, args.key_env, timeout=5)
            if status < 500:
                return 0
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.5)
    print(f"{args.url} did not answer within {args.timeout:g}s ({last})", file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by run.sh) counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def cmd_probe(args: argparse.Namespace) -> int:
    """Send the input's first line the way streamrun does and keep the server's answer."""
    line = json.loads(Path(args.input).read_text().splitlines()[0])
    body = {k: v for k, v in line.items() if k != "custom_id"}
    path = "/chat/completions" if "messages" in body else "/completions"
    body.setdefault("model", args.model)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    url = args.base_url.rstrip("/") + path
    try:
        status, ctype, text = _request(url, body, args.key_env, timeout=120)
    except (OSError, urllib.error.URLError) as exc:
        status, ctype, text = None, "", f"request failed: {exc}"
    shown = copy.deepcopy(body)  # what the file shows: long contents cut
    for m in shown.get("messages", []):
        if isinstance(m.get("content"), str) and len(m["content"]) > 120:
            m["content"] = m["content"][:60] + f"... ({len(m['content'])} chars)"
    out = {"request": {"url": url, "body": shown}, "status": status, "content_type": ctype, "body": text[:4000]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


# --------------------------------------------------------------------------- evaluate

def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rc(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _server_message(probe: dict) -> str | None:
    """The message the server itself put in its error answer (JSON error body or SSE error event)."""
    text = probe.get("body") or ""
    candidates = [text]
    candidates += [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        if "detail" in obj:  # FastAPI validation errors
            return json.dumps(obj["detail"]) if not isinstance(obj["detail"], str) else obj["detail"]
    return text.strip() or None


def _ok_stream(recs: list[dict], rc: int | None, url: str, expected: int) -> tuple[bool, str]:
    if rc != 0:
        return False, f"streamrun exit {rc} (want 0)"
    if len(recs) != expected:
        return False, f"{len(recs)} records (want {expected})"
    for r in recs:
        cid = r.get("custom_id")
        if r.get("status") != "ok":
            return False, f"{cid}: status {r.get('status')}: {(r.get('error') or {}).get('message')}"
        if r.get("request_url") != url:
            return False, f"{cid}: request_url {r.get('request_url')} (want {url})"
        if not r.get("text"):
            return False, f"{cid}: empty text"
        if not r.get("finish_reason"):
            return False, f"{cid}: no finish_reason"
        if r.get("attempts") != 1:
            return False, f"{cid}: attempts {r.get('attempts')}"
        m = r.get("metrics") or {}
        if not isinstance(m.get("ttft_s"), (int, float)) or not isinstance(m.get("e2e_s"), (int, float)):
            return False, f"{cid}: ttft_s/e2e_s missing"
        if len(m.get("itl_s") or []) < 1:
            return False, f"{cid}: text came in one event (not streamed)"
    events = min(len(r["metrics"]["itl_s"]) + 1 for r in recs)
    return True, f"{len(recs)} ok, >= {events} text events, finish_reason {recs[0]['finish_reason']}"


def _ok_usage(recs: list[dict]) -> tuple[bool, str]:
    if not recs:
        return False, "no successful records to look at"
    for r in recs:
        cid = r.get("custom_id")
        u = r.get("usage")
        if not isinstance(u, dict):
            return False, f"{cid}: no usage in the stream"
        p, c, t = u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens")
        if not (isinstance(p, int) and p > 0 and isinstance(c, int) and c > 0 and t == p + c):
            return False, f"{cid}: usage {u}"
        if (r.get("metrics") or {}).get("output_tokens_source") != "usage":
            return False, f"{cid}: output_tokens_source {(r.get('metrics') or {}).get('output_tokens_source')}"
    u = recs[0]["usage"]
    return True, f"{len(recs)} records, e.g. {u['prompt_tokens']}+{u['completion_tokens']}={u['total_tokens']}"


def _ok_error(recs: list[dict], rc: int | None, probe: dict | None, context: bool) -> tuple[bool, str]:
    if rc != 1:
        return False, f"streamrun exit {rc} (want 1)"
    if len(recs) != 1:
        return False, f"{len(recs)} records (want 1)"
    r = recs[0]
    err = r.get("error") or {}
    message = str(err.get("message") or "")
    if r.get("status") != "error":
        return False, f"status {r.get('status')} (want error), text {r.get('text')!r}"
    code = err.get("status_code")
    if r.get("attempts") != 1 and (context or (isinstance(code, int) and 400 <= code < 500)):
        return False, f"attempts {r.get('attempts')} (want 1: not retried); {err.get('type')} {code}: {message[:120]}"
    if context and not CONTEXT_RE.search(message):
        return False, f"message does not mention the context length: {message[:160]!r}"
    if probe is not None:
        server = _server_message(probe)
        if not server:
            return False, f"server answered nothing readable: {probe.get('status')} {probe.get('body')!r:.120}"
        # streamrun may cut long messages (500 chars): compare the start
        if server[:200] not in message:
            return False, f"record's message {message[:160]!r} lacks the server's {server[:160]!r}"
    short = message.replace("\n", " ")
    tries = "" if r.get("attempts") == 1 else f", {r.get('attempts')} attempts"
    return True, f"{err.get('type')} {code}{tries}: {short[:90]}{'...' if len(short) > 90 else ''}"


def _ok_concurrent(recs: list[dict], rc: int | None, expected: int) -> tuple[bool, str]:
    """Every stream finished (a finish_reason) or is an error record: a stream the
    server cut short must never be an "ok" record with part of the text."""
    if len(recs) != expected:
        return False, f"{len(recs)} records (want {expected}), streamrun exit {rc}"
    cut = [r for r in recs if r.get("status") == "ok" and not r.get("finish_reason")]
    if cut:
        r = cut[0]
        return False, (f"{len(cut)} of {len(recs)} ok without finish_reason (stream ended by [DONE] mid-answer), "
                       f"e.g. {r.get('custom_id')}: text {r.get('text')!r}")
    ok = sum(r.get("status") == "ok" for r in recs)
    retried = sum(r.get("attempts", 1) > 1 for r in recs)
    errors = sorted({(r.get("error") or {}).get("type") for r in recs if r.get("status") != "ok"})
    return True, (f"{ok} ok with finish_reason, {retried} retried"
                  + (f", {len(recs) - ok} errors ({', '.join(map(str, errors))})" if ok < len(recs) else ""))


def _lacking(check: str, recs: list[dict], good: list[dict]) -> str | None:
    """What streamrun did where the server lacks the feature; None when that is not acceptable."""
    if check == "usage":
        if good and all(r.get("usage") is None for r in good):
            sources = sorted({str((r.get("metrics") or {}).get("output_tokens_source")) for r in good})
            if "usage" not in sources and "None" not in sources:
                return f"streamrun counted output tokens from {'/'.join(sources)}"
        return None
    if len(recs) != 1:
        return None
    r = recs[0]
    err = r.get("error") or {}
    if check in ("unknown_model", "invalid_request") and r.get("status") == "ok":
        return "the server answered it: record ok"
    if check == "too_long" and r.get("status") == "error":
        return f"streamrun: {err.get('type')} after {r.get('attempts')} attempts ({err.get('message')})"
    if check == "completions" and err.get("status_code") == 404:
        return "streamrun: HTTP 404 recorded"
    return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    lacks = dict(item.split("=", 1) for item in args.lacks)
    unknown = set(lacks) - set(CHECKS)
    if unknown:
        raise SystemExit(f"--lacks names unknown checks: {sorted(unknown)}")
    rows = []
    good: list[dict] = []
    for check in CHECKS:
        recs = _records(d / f"{check}.jsonl")
        rc = _rc(d / f"{check}.rc")
        probe_path = d / f"{check}.server.json"
        probe = json.loads(probe_path.read_text()) if probe_path.exists() else None
        if check == "chat":
            ok, detail = _ok_stream(recs, rc, "/v1/chat/completions", 2)
            good += [r for r in recs if r.get("status") == "ok"]
        elif check == "completions":
            ok, detail = _ok_stream(recs, rc, "/v1/completions", 2)
            good += [r for r in recs if r.get("status") == "ok"]
        elif check == "usage":
            ok, detail = _ok_usage(good)
        elif check == "concurrent":
            ok, detail = _ok_concurrent(recs, rc, 8)
        else:
            ok, detail = _ok_error(recs, rc, probe, context=check == "too_long")
        result = "pass" if ok else "FAIL"
        if not ok and check in lacks:
            fallback = _lacking(check, recs if check != "usage" else good, good)
            if fallback is not None:
                result, detail = "n/a", f"{lacks[check]}; {fallback}"
        rows.append((check, result, detail))
    with open(args.table, "a") as fh:
        for check, result, detail in rows:
            fh.write(json.dumps({"server": args.server, "version": args.version, "check": CHECKS[check],
                                 "result": result, "detail": detail}) + "\n")
    return 0


def cmd_fail(args: argparse.Namespace) -> int:
    """A server that never came up: every check fails with the reason."""
    with open(args.table, "a") as fh:
        fh.write(json.dumps({"server": args.server, "version": args.version, "check": "server started",
                             "result": "FAIL", "detail": args.reason}) + "\n")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    rows = _records(Path(args.table))
    if not rows:
        print("no interop results", file=sys.stderr)
        return 1
    cols = ("server", "version", "check", "result", "detail")
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    line = "  ".join(c.ljust(width[c]) for c in cols[:-1]) + "  detail"
    print(line)
    print("-" * min(len(line) + 60, 160))
    for r in rows:
        detail = r["detail"].replace("\n", " ")
        detail = detail if len(detail) <= 150 else detail[:147] + "..."
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols[:-1]) + "  " + detail)
    failed = sum(r["result"] == "FAIL" for r in rows)
    passed = sum(r["result"] == "pass" for r in rows)
    print(f"\ninterop: {passed} passed, {failed} failed, {len(rows) - passed - failed} n/a (server lacks the feature)")
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("--pid", type=int)
    w.add_argument("--timeout", type=float, default=180)
    w.add_argument("--key-env")
    pr = sub.add_parser("probe")
    pr.add_argument("input")
    pr.add_argument("--base-url", required=True)
    pr.add_argument("--model", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--key-env")
    e = sub.add_parser("evaluate")
    e.add_argument("--server", required=True)
    e.add_argument("--version", required=True)
    e.add_argument("--dir", required=True)
    e.add_argument("--table", required=True)
    e.add_argument("--lacks", nargs="*", default=[], metavar="CHECK=REASON",
                   help="a feature the server lacks: its check is n/a when streamrun handled the lack")
    f = sub.add_parser("fail")
    f.add_argument("--server", required=True)
    f.add_argument("--version", required=True)
    f.add_argument("--table", required=True)
    f.add_argument("--reason", required=True)
    t = sub.add_parser("table")
    t.add_argument("table")
    args = p.parse_args()
    return {"wait": cmd_wait, "probe": cmd_probe, "evaluate": cmd_evaluate, "fail": cmd_fail,
            "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
