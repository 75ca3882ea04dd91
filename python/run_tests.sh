#!/usr/bin/env bash
# Build Kiln's wheel with maturin, install it into a fresh virtual
# environment, and run the Python API tests against it on the default model.
#
#   bash python/run_tests.sh [pytest args...]
#
# The model comes from the Kiln cache ($KILN_CACHE, as for the `kiln`
# command); scripts/test.sh pulls it first.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="target/python-tools"
REQ=python/requirements-test.txt
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$TOOLS/bin/maturin" || "$(cat "$TOOLS/.requirements.sha256" 2>/dev/null || true)" != "$want" ]]; then
    rm -rf "$TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" >"$TOOLS/.requirements.sha256"
fi

echo "== wheel (maturin build --release)"
rm -rf target/wheels
"$TOOLS/bin/maturin" build --release --manifest-path python/Cargo.toml --out target/wheels
wheel="$(ls target/wheels/*.whl)"
echo "wheel: $(basename "$wheel"), $(du -h "$wheel" | cut -f1) ($(stat -c %s "$wheel") bytes)"

echo "== fresh venv, pip install the wheel"
VENV="target/python-wheel-venv"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" "$(grep '^pytest==' "$REQ")"

echo "== Python API tests"
# Run from python/tests so that `import kiln` can only mean the installed wheel.
cd python/tests
exec "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
