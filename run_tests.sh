#!/usr/bin/env bash
# Bootstraps .venv on first use, then runs the test suite (fast tests by default; `-m slow` for the rest).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
exec .venv/bin/python -m pytest "$@"
