#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Installs what the tests need (helm, kubectl), then formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> tools (helm, kubectl) into ./.tools/bin"
scripts/install-tools.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo test"
# Library, binary, integration tests (tests/e2e.rs runs against a real cluster only when
# BBO_E2E_KUBECONFIG is set, and says it skipped otherwise). Benchmarks are compiled by clippy
# above but never run here: timings belong in BENCHMARKS.md, not in CI.
cargo test --locked
