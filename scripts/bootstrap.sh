#!/usr/bin/env bash
# Creates .venv and installs genshift with constraints.txt on first use; reinstalls when
# pyproject.toml or constraints.txt changed. Sourced by run_benchmark.sh and run_tests.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.genshift-install-stamp"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "genshift: setting up $venv (first use takes a few minutes; torch is ~5 GB)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[dev]" >&2
    echo "$want" > "$stamp"
fi
