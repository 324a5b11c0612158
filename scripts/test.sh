#!/usr/bin/env bash
# The project's single test command: every test, including the AWS backend's, which runs
# against the moto emulator (S3 with Object Lock + DynamoDB) over real HTTP on loopback.
#
#   scripts/test.sh [extra cargo-nextest arguments]
#
# It installs moto into a cached venv if missing, starts it on a free loopback port, exports
# ELEANOR_LEDGER_TEST_AWS_ENDPOINT for the tests, runs `cargo nextest run --lib --bins --tests` (benches are built by clippy in .ci/run) and
# always stops the emulator it started. If the emulator cannot be installed or started, this
# script fails: the AWS tests never pass or skip silently.
#
# Environment:
#   ELEANOR_LEDGER_CACHE  cache directory (default: ~/.cache/eleanor-ledger) for the venv and,
#                         unless CARGO_TARGET_DIR is set, the build directory.
#   CARGO_TARGET_DIR      respected when set.
set -euo pipefail

MOTO_VERSION="5.2.5"
cache="${ELEANOR_LEDGER_CACHE:-$HOME/.cache/eleanor-ledger}"
venv="$cache/venv-emu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "test.sh: $*" >&2; }

if [[ ! -x "$venv/bin/moto_server" ]] \
    || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    log "installing moto[server]==$MOTO_VERSION into $venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# A free loopback port: bind port 0 and read back what the OS chose.
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# moto_server, except that it handles one request at a time. Its threaded server checks a
# condition and applies the write without a lock, so racing conditional writes (DynamoDB
# UpdateItem/PutItem with a ConditionExpression) can both succeed, which real DynamoDB never
# allows. Serialising requests gives tests the per-item atomicity that AWS guarantees; the
# race tests then check that the backend asks for it correctly (they cannot prove AWS's side).
serial_moto='
import sys, threading
from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
lock = threading.Lock()
dispatch = DomainDispatcherApplication.__call__
def one_at_a_time(self, environ, start_response):
    with lock:
        return dispatch(self, environ, start_response)
DomainDispatcherApplication.__call__ = one_at_a_time
server.main(sys.argv[1:])
'

moto_log="$(mktemp -t eleanor-moto.XXXXXX.log)"
"$venv/bin/python" -c "$serial_moto" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
stop_moto() {
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    rm -f "$moto_log"
}
trap stop_moto EXIT

endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 300); do
    if curl -sf "$endpoint/moto-api/" >/dev/null; then
        break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        log "the emulator exited during startup; its log:"
        cat "$moto_log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! curl -sf "$endpoint/moto-api/" >/dev/null; then
    log "the emulator did not answer at $endpoint within 30 s; its log:"
    cat "$moto_log" >&2
    exit 1
fi
log "moto $MOTO_VERSION is up at $endpoint (pid $moto_pid)"

export ELEANOR_LEDGER_TEST_AWS_ENDPOINT="$endpoint"
cargo nextest run --lib --bins --tests "$@"
