#!/usr/bin/env bash
# Install fleetjobs with its test dependencies into .venv, lint (ruff), type-check (mypy), and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]
#
# The suite runs every integration test against SQLite and PostgreSQL. PostgreSQL is found at
# $FLEETJOBS_TEST_PG (default postgresql://postgres@127.0.0.1:5432/test; the user must be allowed
# to CREATE DATABASE). Without it the PostgreSQL half is skipped, unless CI=true, where it fails.
# FLEETJOBS_TEST_BACKENDS=sqlite runs only the SQLite half.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

# Lint first, but run the tests whatever it says; the exit status reports both.
lint_paths=(fleetjobs tests)
[ -d bench ] && lint_paths+=(bench)
lint=0
.venv/bin/ruff check "${lint_paths[@]}" || lint=$?
.venv/bin/ruff format --check "${lint_paths[@]}" || lint=$?
# Types: settings in pyproject.toml ([tool.mypy]); 0 errors expected.
.venv/bin/mypy || lint=$?

tests=0
.venv/bin/python -m pytest "$@" || tests=$?
if [ "$lint" -ne 0 ]; then
  echo "scripts/test.sh: ruff or mypy found problems (see above)" >&2
fi
if [ "$tests" -ne 0 ]; then
  exit "$tests"
fi
exit "$lint"
