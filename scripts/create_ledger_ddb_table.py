#!/usr/bin/env python3
"""The runbook's provisioning command, kept working: forwards its flags to `ledger-init`.

    export ELEANOR_LEDGER_DDB_TABLE=eleanor-stone-tablet-ledger-index
    export ELEANOR_LEDGER_DDB_REGION=us-east-1
    export ELEANOR_LEDGER_DDB_LEDGER_ID=default
    python3 scripts/create_ledger_ddb_table.py --wait --init-meta

It provisions DynamoDB, so it selects the aws backend unless ELEANOR_LEDGER_BACKEND says
otherwise. `ledger-init` is found as $LEDGER_INIT_BIN, on PATH, in the build directory, or
built with cargo. Its exit code is this script's.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_ledger_init():
    explicit = os.environ.get("LEDGER_INIT_BIN")
    if explicit:
        return [explicit]
    on_path = shutil.which("ledger-init")
    if on_path:
        return [on_path]
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    for profile in ("release", "debug"):
        candidate = Path(target) / profile / "ledger-init"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    cargo = shutil.which("cargo")
    if cargo:
        return [cargo, "run", "--quiet", "--release", "--manifest-path", str(ROOT / "Cargo.toml"),
                "--bin", "ledger-init", "--"]
    sys.exit("create_ledger_ddb_table.py: ledger-init not found (set LEDGER_INIT_BIN or put it on PATH)")


def main():
    env = dict(os.environ)
    env.setdefault("ELEANOR_LEDGER_BACKEND", "aws")
    command = find_ledger_init() + sys.argv[1:]
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
