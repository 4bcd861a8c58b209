#!/usr/bin/env bash
# Build the `pip install vramplan` wheel from this checkout and test it, in one command:
#   scripts/build-wheel.sh
# 1. a build venv with maturin from PyPI; 2. `maturin build --release` of python/ (PyO3,
# abi3: one wheel for CPython >= 3.9) into target/wheels/; 3. a fresh venv with only that wheel
# and pytest installed; 4. python/tests against it (the API, the `vramplan` console script).
#
# Environment:
#   VRAMPLAN_WHEEL_PROFILE=dev   build the dev profile instead of release (CI: reuses the
#                                dependencies `cargo test` already built in target/)
#   VRAMPLAN_WHEEL_ML=1          also install torch, transformers, accelerate and lightning into the test
#                                venv (several GB from PyPI) so the callback tests run instead
#                                of being skipped
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
work=$CARGO_TARGET_DIR/wheel-venvs
out=$CARGO_TARGET_DIR/wheels

python=${PYTHON:-python3}
if ! "$python" -m venv --help >/dev/null 2>&1; then
  echo "build-wheel: SKIPPED: $python -m venv is not available" >&2
  exit 0
fi

echo "== build venv: maturin"
"$python" -m venv "$work/build"
"$work/build/bin/python" -m pip install --quiet --upgrade "maturin>=1.5,<2"

profile=(--release)
if [ "${VRAMPLAN_WHEEL_PROFILE:-release}" = dev ]; then
  profile=()
fi
echo "== maturin build ${profile[*]:-(dev profile)}"
rm -rf "$out"
"$work/build/bin/maturin" build "${profile[@]}" --manifest-path python/Cargo.toml --out "$out"
wheel=$(ls "$out"/vramplan-*.whl)
echo "built $wheel"

echo "== a fresh venv with the wheel"
rm -rf "$work/test"
"$python" -m venv "$work/test"
"$work/test/bin/python" -m pip install --quiet "$wheel" pytest
if [ "${VRAMPLAN_WHEEL_ML:-0}" = 1 ]; then
  "$work/test/bin/python" -m pip install --quiet "transformers[torch]" lightning
fi

echo "== python tests (python/tests)"
cd "$root"
set +e
"$work/test/bin/python" -m pytest -rs python/tests
code=$?
set -e
# pytest's 5 is "no tests collected": not a failure of the wheel.
if [ "$code" = 5 ]; then
  echo "build-wheel: pytest collected no tests"
  exit 0
fi
exit "$code"
