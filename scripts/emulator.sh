# Starting and stopping the S3/DynamoDB emulator (moto), for scripts/test.sh and
# scripts/loadtest. Source it, then:
#
#   emulator_start      installs moto into the cached venv if needed, starts it on a free
#                       loopback port, waits until it answers; sets EMULATOR_URL and
#                       EMULATOR_PID. Exits the calling script (status 1, with moto's log) if
#                       the emulator cannot be installed or started.
#   emulator_stop       stops it (safe to call twice; call it from an EXIT trap).
#
# ELEANOR_LEDGER_CACHE names the cache directory (default ~/.cache/eleanor-ledger).

MOTO_VERSION="5.2.5"
EMULATOR_URL=
EMULATOR_PID=
_emulator_log=

# moto_server, except that it handles one request at a time. Its threaded server checks a
# condition and applies the write without a lock, so racing conditional writes (DynamoDB
# UpdateItem/PutItem with a ConditionExpression) can both succeed, which real DynamoDB never
# allows. Serialising requests gives tests the per-item atomicity that AWS guarantees; the
# race tests then check that the backend asks for it correctly (they cannot prove AWS's side).
_serial_moto='
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

emulator_start() {
    local cache="${ELEANOR_LEDGER_CACHE:-$HOME/.cache/eleanor-ledger}"
    local venv="$cache/venv-emu"
    if [[ ! -x "$venv/bin/moto_server" ]] \
        || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
        echo "emulator: installing moto[server]==$MOTO_VERSION into $venv" >&2
        mkdir -p "$cache"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    # A free loopback port: bind port 0 and read back what the OS chose.
    local port
    port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    _emulator_log="$(mktemp -t eleanor-moto.XXXXXX.log)"
    "$venv/bin/python" -c "$_serial_moto" -H 127.0.0.1 -p "$port" >"$_emulator_log" 2>&1 &
    EMULATOR_PID=$!
    EMULATOR_URL="http://127.0.0.1:$port"
    local _
    for _ in $(seq 1 300); do
        curl -sf "$EMULATOR_URL/moto-api/" >/dev/null && break
        if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
            echo "emulator: moto exited during startup; its log:" >&2
            cat "$_emulator_log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if ! curl -sf "$EMULATOR_URL/moto-api/" >/dev/null; then
        echo "emulator: moto did not answer at $EMULATOR_URL within 30 s; its log:" >&2
        cat "$_emulator_log" >&2
        exit 1
    fi
    echo "emulator: moto $MOTO_VERSION is up at $EMULATOR_URL (pid $EMULATOR_PID)" >&2
}

emulator_stop() {
    if [[ -n "$EMULATOR_PID" ]]; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
        EMULATOR_PID=
    fi
    [[ -n "$_emulator_log" ]] && rm -f "$_emulator_log"
    _emulator_log=
}
