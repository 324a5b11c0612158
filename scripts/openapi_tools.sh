# Installing the OpenAPI tools that tests/openapi_contract.rs runs, for scripts/test.sh.
# Source it, then:
#
#   openapi_tools_install   installs (once; cached under ELEANOR_LEDGER_CACHE) schemathesis
#                           and openapi-spec-validator into a venv, and Redocly CLI with npm,
#                           at the pinned versions below; exports ELEANOR_LEDGER_TEST_SCHEMATHESIS,
#                           ELEANOR_LEDGER_TEST_OPENAPI_SPEC_VALIDATOR and
#                           ELEANOR_LEDGER_TEST_REDOCLY. Exits the calling script (status 1,
#                           saying what is missing) if a tool cannot be installed: the contract
#                           tests never pass or skip without them.
#
# Needs python3 with venv, and Node.js (>= 20.19) with npm.

SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_SPEC_VALIDATOR_VERSION="0.9.0"
REDOCLY_CLI_VERSION="2.77.0"

_openapi_tools_fail() {
    echo "openapi tools: $*" >&2
    exit 1
}

openapi_tools_install() {
    local cache="${ELEANOR_LEDGER_CACHE:-$HOME/.cache/eleanor-ledger}"
    local venv="$cache/venv-contract"
    local want="schemathesis==$SCHEMATHESIS_VERSION openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
    if [[ ! -x "$venv/bin/schemathesis" || ! -x "$venv/bin/openapi-spec-validator" ]] \
        || [[ "$(cat "$venv/.pinned" 2>/dev/null)" != "$want" ]]; then
        echo "openapi tools: installing $want into $venv" >&2
        mkdir -p "$cache"
        python3 -m venv "$venv" || _openapi_tools_fail "python3 -m venv failed (install python3-venv)"
        # shellcheck disable=SC2086 # two requirements, split on purpose
        "$venv/bin/pip" install --quiet --disable-pip-version-check $want \
            || _openapi_tools_fail "pip could not install $want"
        echo "$want" >"$venv/.pinned"
    fi

    command -v node >/dev/null && command -v npm >/dev/null \
        || _openapi_tools_fail "Redocly CLI needs Node.js and npm (apt-get install nodejs npm)"
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
        || _openapi_tools_fail "Redocly CLI $REDOCLY_CLI_VERSION needs Node.js >= 20.19, this is $(node --version)"
    local npm_dir="$cache/npm-redocly"
    local redocly="$npm_dir/node_modules/.bin/redocly"
    if [[ ! -x "$redocly" ]] \
        || [[ "$(node -p "require('$npm_dir/node_modules/@redocly/cli/package.json').version" 2>/dev/null)" != "$REDOCLY_CLI_VERSION" ]]; then
        echo "openapi tools: installing @redocly/cli@$REDOCLY_CLI_VERSION into $npm_dir" >&2
        mkdir -p "$npm_dir"
        npm install --prefix "$npm_dir" --no-audit --no-fund --silent "@redocly/cli@$REDOCLY_CLI_VERSION" \
            || _openapi_tools_fail "npm could not install @redocly/cli@$REDOCLY_CLI_VERSION"
    fi

    export ELEANOR_LEDGER_TEST_SCHEMATHESIS="$venv/bin/schemathesis"
    export ELEANOR_LEDGER_TEST_OPENAPI_SPEC_VALIDATOR="$venv/bin/openapi-spec-validator"
    export ELEANOR_LEDGER_TEST_REDOCLY="$redocly"
    echo "openapi tools: schemathesis $SCHEMATHESIS_VERSION, openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION, Redocly CLI $REDOCLY_CLI_VERSION" >&2
}
