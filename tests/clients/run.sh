#!/usr/bin/env bash
# The official-client suite: a venv with the pinned clients (target/client-venv,
# rebuilt when requirements.txt changes), then pytest against a live
# `kiln serve` started by conftest.py. Needs target/release/kiln; the model is
# $KILN_TEST_GGUF or the default model from the Kiln cache (pulled if absent).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${KILN_CLIENT_VENV:-target/client-venv}"
REQ=tests/clients/requirements.txt
NODEPS=tests/clients/requirements-nodeps.txt
STAMP="$VENV/.requirements.sha256"
want="$(cat "$REQ" "$NODEPS" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "== client venv: $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$NODEPS"
    echo "$want" >"$STAMP"
fi

[[ -x target/release/kiln ]] || cargo build --release -p kiln
if [[ -z "${KILN_TEST_GGUF:-}" ]]; then
    KILN_TEST_GGUF="$(./target/release/kiln pull --print-path smollm2-135m-instruct)"
    export KILN_TEST_GGUF
fi

exec "$VENV/bin/python" -m pytest tests/clients -q -p no:cacheprovider "$@"
