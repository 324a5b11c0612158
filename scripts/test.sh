#!/usr/bin/env bash
# The project's single test command: every test, including the AWS backend's, which runs
# against the moto emulator (S3 with Object Lock + DynamoDB) over real HTTP on loopback, and
# the alert rules' `promtool test rules` tests (tests/promtool/prometheus-rules.test.yaml).
#
#   scripts/test.sh [extra cargo-nextest arguments]
#
# It installs moto into a cached venv if missing, starts it on a free loopback port, exports
# ELEANOR_LEDGER_TEST_AWS_ENDPOINT for the tests, runs `cargo nextest run --lib --bins --tests` (benches are built by clippy in .ci/run) and
# always stops the emulator it started. If the emulator cannot be installed or started, this
# script fails: the AWS tests never pass or skip silently. The same goes for the OpenAPI tools
# (schemathesis, openapi-spec-validator, Redocly CLI; scripts/openapi_tools.sh) that
# tests/openapi_contract.rs runs: installed at pinned versions into the cache, or this fails.
#
# Environment:
#   ELEANOR_LEDGER_CACHE  cache directory (default: ~/.cache/eleanor-ledger) for the venvs, the
#                         npm packages and,
#                         unless CARGO_TARGET_DIR is set, the build directory.
#   CARGO_TARGET_DIR      respected when set.
set -euo pipefail

cache="${ELEANOR_LEDGER_CACHE:-$HOME/.cache/eleanor-ledger}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# promtool comes with Debian's `prometheus` package; installed here when missing (as root), and
# a missing promtool fails the run: the alert tests never pass or skip silently.
if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    fi
    command -v promtool >/dev/null || { echo "scripts/test.sh: promtool is needed (apt-get install prometheus)" >&2; exit 1; }
fi
echo "== promtool test rules tests/promtool/prometheus-rules.test.yaml"
rules_dir="$(mktemp -d)"
# The PrometheusRule's `spec` is a plain rule file, indented under `spec:`.
awk 'found { sub(/^  /, ""); print } /^spec:/ { found = 1 }' k8s/monitoring/prometheus-rules.yaml \
    >"$rules_dir/prometheus-rules.yaml"
cp tests/promtool/prometheus-rules.test.yaml "$rules_dir/"
promtool check rules "$rules_dir/prometheus-rules.yaml"
promtool test rules "$rules_dir/prometheus-rules.test.yaml"
rm -rf "$rules_dir"

# shellcheck source=scripts/emulator.sh
source scripts/emulator.sh
# shellcheck source=scripts/openapi_tools.sh
source scripts/openapi_tools.sh
openapi_tools_install
trap emulator_stop EXIT
emulator_start

export ELEANOR_LEDGER_TEST_AWS_ENDPOINT="$EMULATOR_URL"
cargo nextest run --lib --bins --tests "$@"
