#!/usr/bin/env bash
# `make interop`: run streamrun against real OpenAI-compatible servers that are
# not part of this project, installed from PyPI into .interop/ (cached between
# runs), each started on 127.0.0.1 only and stopped on exit, failure or Ctrl-C.
#
#   llama-cpp-python[server]  with a tiny random-weight GGUF made by make_tiny_gguf.py
#   litellm[proxy]            with a mock_response model (no upstream call)
#
# Prints a table (server, version, check, result) and exits 1 if any check failed.
# Environment: PYTHON (for the server venvs, default python3), INTEROP_DIR
# (default .interop), INTEROP_SERVERS (default "llama-cpp-python litellm"),
# STREAMRUN (the streamrun executable, default .venv/bin/streamrun).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
STATE="${INTEROP_DIR:-$ROOT/.interop}"
SERVERS="${INTEROP_SERVERS:-llama-cpp-python litellm}"
STREAMRUN="${STREAMRUN:-$ROOT/.venv/bin/streamrun}"   # override to test another build
CHECK="$PYTHON $ROOT/interop/check.py"
OUT="$STATE/out"
LOGS="$STATE/logs"
TABLE="$OUT/table.jsonl"
START=$SECONDS

mkdir -p "$STATE"
[ -f "$STATE/.gitignore" ] || echo '*' > "$STATE/.gitignore"   # never committed
rm -rf "$OUT" && mkdir -p "$OUT" "$LOGS"

log() { printf '[interop %4ss] %s\n' "$((SECONDS - START))" "$*" >&2; }

# ---------------------------------------------------------------- servers we started
SERVER_PIDS=()

stop_server() {  # PID: TERM its process group, KILL what is left after 10 s
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "server $pid ignored SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
    SERVER_PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

start_server() {  # LOGFILE CMD...: start CMD as the leader of its own process group; sets SERVER_PID
    local logfile=$1; shift
    # setpgid then exec: $! is the server itself and -$! its group (children included),
    # whether or not this shell runs with job control; Ctrl-C on a terminal reaches
    # only the foreground group, so the servers are stopped by cleanup, in order.
    "$PYTHON" -c 'import os, sys; os.setpgid(0, 0); os.execvp(sys.argv[1], sys.argv[1:])' "$@" \
        >"$logfile" 2>&1 </dev/null &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- cached venvs
ensure_venv() {  # NAME REQUIREMENTS [VAR=VALUE...]: .interop/venv-NAME, rebuilt when the pins change
    local name=$1 req=$2; shift 2
    local dir="$STATE/venv-$name" stamp want
    stamp="$dir/.installed"
    want="$(cat "$req") $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$name: cached venv $dir"
        return 0
    fi
    log "$name: installing $(tr '\n' ' ' <"$req")into $dir (log: $LOGS/install-$name.log)"
    rm -rf "$dir"
    if ! { "$PYTHON" -m venv "$dir" \
           && "$dir/bin/python" -m pip install --upgrade pip \
           && env "$@" "$dir/bin/python" -m pip install -r "$req"; } >"$LOGS/install-$name.log" 2>&1; then
        tail -n 30 "$LOGS/install-$name.log" >&2
        log "$name: install FAILED"
        return 1
    fi
    echo "$want" >"$stamp"
    log "$name: installed"
}

pip_version() {  # VENV PACKAGE
    "$1/bin/python" -m pip show "$2" 2>/dev/null | sed -n 's/^Version: //p'
}

# ---------------------------------------------------------------- the checks
# Every server gets the same inputs (interop/*.jsonl), sent as a user would.
run_checks() {  # SERVER VERSION BASE_URL MODEL KEY_ENV LACKS...
    local server=$1 version=$2 base=$3 model=$4 key_env=$5; shift 5
    local dir="$OUT/$server" check conc attempts rc
    local auth=()
    [ -n "$key_env" ] && auth=(--api-key-env "$key_env")
    mkdir -p "$dir"
    for check in chat completions unknown_model invalid_request too_long concurrent; do
        conc=1; attempts=2
        [ "$check" = concurrent ] && { conc=8; attempts=5; }
        "$STREAMRUN" run "interop/$check.jsonl" -o "$dir/$check.jsonl" --overwrite \
            --base-url "$base" --model "$model" "${auth[@]}" \
            -c "$conc" --max-attempts "$attempts" --timeout 120 --no-progress \
            >"$dir/$check.log" 2>&1
        rc=$?
        echo "$rc" >"$dir/$check.rc"
        log "$server: streamrun run interop/$check.jsonl -> exit $rc"
        case $check in
            unknown_model|invalid_request|too_long)
                # the server's own answer to the same request, to compare with the record
                $CHECK probe "interop/$check.jsonl" --base-url "$base" --model "$model" \
                    ${key_env:+--key-env "$key_env"} --out "$dir/$check.server.json" ;;
        esac
    done
    $CHECK evaluate --server "$server" --version "$version" --dir "$dir" --table "$TABLE" "$@" \
        || server_failed "$server" "$version" "check.py evaluate failed"
}

server_failed() {  # SERVER VERSION REASON LOGFILE
    [ -n "${4:-}" ] && [ -f "$4" ] && tail -n 30 "$4" >&2
    log "$1: $3"
    $CHECK fail --server "$1" --version "${2:-?}" --table "$TABLE" --reason "$3"
}

# ---------------------------------------------------------------- llama-cpp-python
run_llama_cpp_python() {
    local server=llama-cpp-python venv="$STATE/venv-llama" port version model="$STATE/tiny-llama.gguf"
    local slog="$LOGS/$server.log"
    if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null; then
        server_failed $server "" "no C++ compiler to build llama-cpp-python (apt-get install build-essential cmake)"
        return
    fi
    [ -f "$venv/.installed" ] \
        || log "$server: a first build compiles llama.cpp (about 7 min on 2 cores; pip caches the wheel)"
    ensure_venv llama interop/requirements-llama.txt CMAKE_ARGS="-DGGML_NATIVE=OFF" \
        || { server_failed $server "" "pip install failed (see $LOGS/install-llama.log)"; return; }
    version=$(pip_version "$venv" llama-cpp-python)
    "$venv/bin/python" interop/make_tiny_gguf.py "$model" >&2 \
        || { server_failed $server "$version" "make_tiny_gguf.py failed"; return; }
    port=$(free_port)
    # Server defaults kept on purpose (interrupt_requests included): the checks
    # are what a user pointing streamrun at `python -m llama_cpp.server` gets.
    start_server "$slog" "$venv/bin/python" -m llama_cpp.server --model "$model" \
        --model_alias tiny-llama --host 127.0.0.1 --port "$port" --n_ctx 256 --n_threads 2
    log "$server $version: started (pid $SERVER_PID) on 127.0.0.1:$port (log: $slog)"
    if ! $CHECK wait "http://127.0.0.1:$port/v1/models" --pid "$SERVER_PID" --timeout 120; then
        server_failed $server "$version" "server did not come up (see $slog)" "$slog"
    else
        run_checks $server "$version" "http://127.0.0.1:$port/v1" tiny-llama "" \
            --lacks "usage=the server ignores stream_options.include_usage (no usage chunk)" \
                    "unknown_model=the server answers any model name with its one model" \
                    "too_long=the server sends 200, then ends the stream empty or resets it (the error is only in its log)"
    fi
    stop_server "$SERVER_PID"
}

# ---------------------------------------------------------------- LiteLLM proxy
run_litellm() {
    local server=litellm venv="$STATE/venv-litellm" port version slog="$LOGS/litellm.log"
    ensure_venv litellm interop/requirements-litellm.txt \
        || { server_failed $server "" "pip install failed (see $LOGS/install-litellm.log)"; return; }
    version=$(pip_version "$venv" litellm)
    port=$(free_port)
    # The proxy refuses to start without a master key: a fresh one per run,
    # handed to streamrun by name (--api-key-env), never on a command line.
    LITELLM_MASTER_KEY="sk-interop-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
    export LITELLM_MASTER_KEY
    # No network: the bundled model cost map, no telemetry.
    start_server "$slog" env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
        "$venv/bin/litellm" --config interop/litellm.yaml --host 127.0.0.1 --port "$port"
    log "$server $version: started (pid $SERVER_PID) on 127.0.0.1:$port (log: $slog)"
    if ! $CHECK wait "http://127.0.0.1:$port/health/liveliness" --pid "$SERVER_PID" --timeout 180; then
        server_failed $server "$version" "server did not come up (see $slog)" "$slog"
    else
        run_checks $server "$version" "http://127.0.0.1:$port/v1" mock-gpt LITELLM_MASTER_KEY \
            --lacks "invalid_request=the mock_response model accepts any role and parameter"
    fi
    stop_server "$SERVER_PID"
}

# ---------------------------------------------------------------- main
[ -x "$STREAMRUN" ] || { log "no $STREAMRUN: run 'make interop' (it installs .venv first)"; exit 2; }
for server in $SERVERS; do
    t0=$SECONDS
    case $server in
        llama-cpp-python) run_llama_cpp_python ;;
        litellm) run_litellm ;;
        *) log "unknown server $server"; exit 2 ;;
    esac
    log "$server: done in $((SECONDS - t0)) s"
done
cleanup
echo
$CHECK table "$TABLE"
status=$?
echo "interop: took $((SECONDS - START)) s; records and logs in ${OUT#"$ROOT"/} and ${LOGS#"$ROOT"/}"
exit $status
