#!/usr/bin/env bash
# Rebuilds requirements/lock.txt's versions: installs the ranges of pyproject.toml into a scratch
# venv and prints what resolved. Review the output and copy versions into the lock by hand, keeping
# its grouping comments.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q --upgrade pip
"$scratch/venv/bin/pip" install -q --group test --group lint --group codegen --group bench --group fuzz setuptools -e .
"$scratch/venv/bin/pip" freeze --exclude-editable
