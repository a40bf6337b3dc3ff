#!/usr/bin/env bash
# Creates .venv and installs moectl. torch goes first and pinned: an unpinned torch pulls the CUDA build.
# Usage: bash scripts/setup.sh [offline|dev]   (offline: the built-in corpus; dev: tests and lint too)
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-offline}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${MOECTL_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[${extra}]"
