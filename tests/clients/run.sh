#!/usr/bin/env bash
# The official-client acceptance suite against a live `kiln serve`.
#
#   bash tests/clients/run.sh [pytest args...]
#
# Creates (or reuses) a virtual environment at target/client-venv with the
# pinned clients from requirements.txt, rebuilt whenever that file changes,
# then runs pytest; conftest.py starts and stops the server. Needs
# target/release/kiln (`cargo build --release --workspace --bins --lib`).
# The model is $KILN_TEST_GGUF when set, else the default model from the Kiln
# cache (`kiln pull` fetches it when missing); the embedding model is
# $KILN_TEST_EMBEDDING_MODEL, else all-MiniLM-L6-v2 from the cache.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${KILN_CLIENT_VENV:-target/client-venv}"
REQ=tests/clients/requirements.txt
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    echo "== client venv: $VENV (requirements changed or venv missing)"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        echo "python3 -m venv failed: install Python 3.9+ with the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    # Lines marked `# no-deps` are installed without their declared
    # dependencies; everything else is resolved normally.
    resolved="$VENV/requirements-resolved.txt"
    nodeps="$VENV/requirements-nodeps.txt"
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$REQ" | grep -v '^$' >"$resolved.all"
    grep -E '#[[:space:]]*no-deps' "$REQ" | sed -e 's/#.*//' -e 's/[[:space:]]*$//' >"$nodeps"
    grep -vxF -f "$nodeps" "$resolved.all" >"$resolved"
    "${pip[@]}" -r "$resolved"
    if [[ -s "$nodeps" ]]; then "${pip[@]}" --no-deps -r "$nodeps"; fi
    echo "$want" >"$STAMP"
fi

# The playground tests drive Debian's Chromium (no browser download).
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "== installing chromium and chromium-driver (Debian packages)"
    sudo_cmd=()
    if [[ "$(id -u)" != 0 ]]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [[ ! -x target/release/kiln ]]; then
    echo "target/release/kiln is missing: run \`cargo build --release --workspace --bins --lib\` first" >&2
    exit 1
fi

if [[ -z "${KILN_TEST_GGUF:-}" ]]; then
    KILN_TEST_GGUF="$(./target/release/kiln pull --print-path smollm2-135m-instruct)"
fi
export KILN_TEST_GGUF
if [[ -z "${KILN_TEST_EMBEDDING_MODEL:-}" ]]; then
    KILN_TEST_EMBEDDING_MODEL="$(./target/release/kiln pull --print-path all-minilm-l6-v2)"
fi
export KILN_TEST_EMBEDDING_MODEL
# Other families, served through the three dialects (test_families.py).
if [[ -z "${KILN_TEST_QWEN_GGUF:-}" ]]; then
    KILN_TEST_QWEN_GGUF="$(./target/release/kiln pull --print-path qwen2.5-coder-0.5b-instruct-q4_k_m)"
fi
if [[ -z "${KILN_TEST_GEMMA_GGUF:-}" ]]; then
    KILN_TEST_GEMMA_GGUF="$(./target/release/kiln pull --print-path gemma-3-270m-q4_k_m)"
fi
export KILN_TEST_QWEN_GGUF KILN_TEST_GEMMA_GGUF

exec "$VENV/bin/python" -m pytest tests/clients -q -p no:cacheprovider "$@"
