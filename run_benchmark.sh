#!/usr/bin/env bash
# Bootstraps .venv on first use, then runs `genshift run` (default: the embedded benchmark) and
# prints the leaderboard. Every argument goes to `genshift run`; see `genshift run --help`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
exec .venv/bin/genshift run "$@"
