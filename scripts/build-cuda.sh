#!/usr/bin/env bash
# Build vramplan with candle's CUDA backend (cargo feature `cuda`) on a machine without a GPU
# or CUDA toolkit, and pack the binary for a GPU machine.
#
#   scripts/build-cuda.sh            install the toolchain (once), build, pack into dist/
#   scripts/build-cuda.sh --clippy   the same, then clippy --features cuda -D warnings
#
# Why each step (see ../shared/notes/candle-cuda.md, §3):
# * candle 0.11 links cudarc dynamically and takes the CUDA version from `nvcc --version`. The
#   GPU machines run driver 580 (CUDA 13.0) with PyTorch's CUDA 13 wheels, so the toolkit is
#   CUDA 13.0 from PyPI, every wheel pinned to 13.0.x (an unpinned nvidia-nvvm pulls a newer
#   one whose PTX the 580 driver may not load).
# * The wheels ship only versioned sonames: the linker needs libX.so symlinks.
# * Linking needs a libcuda: a generated link-only stub with soname libcuda.so.1, so the binary
#   loads the real driver library at run time.
# * There is no GPU to detect the architecture: CUDA_COMPUTE_CAP (default 90: H100/H200).
# * Build scripts re-run when these variables change, so they are set here, identically, on
#   every build, into a target directory of their own.
#
# Environment: CUDA_COMPUTE_CAP (90), CUDA_VENV (.cuda-venv), CUDA_TARGET_DIR (target/cuda),
# PYTHON (python3). Where python3, its venv/pip or gcc are missing it prints SKIPPED and exits 0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAP=${CUDA_COMPUTE_CAP:-90}
VENV=${CUDA_VENV:-$ROOT/.cuda-venv}
TARGET=${CUDA_TARGET_DIR:-$ROOT/target/cuda}
PYTHON=${PYTHON:-python3}
DIST=$ROOT/dist
CLIPPY=0
[[ "${1:-}" == "--clippy" ]] && CLIPPY=1

skip() {
    echo "SKIPPED: $*"
    exit 0
}
command -v "$PYTHON" >/dev/null || skip "$PYTHON not found (needed to install nvcc 13.0 from PyPI)"
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || skip "$PYTHON has no venv/ensurepip (pip)"
command -v gcc >/dev/null || skip "gcc not found (needed for the libcuda link stub)"
command -v cargo >/dev/null || skip "cargo not found"

T0=$(date +%s)
PINS=(
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88"
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas<13.1"
    "nvidia-curand==10.4.0.35" "nvidia-cuda-nvrtc==13.0.48"
)
STAMP=$VENV/.vramplan-pins
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "${PINS[*]}" ]]; then
    echo "== installing CUDA 13.0 toolchain into $VENV"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" || skip "$PYTHON -m venv failed"
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || skip "no pip in $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}" ||
        skip "pip could not install the CUDA 13.0 wheels from PyPI (no network?)"
    echo "${PINS[*]}" >"$STAMP"
fi
CU=$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13 | head -n1)
[[ -x "$CU/bin/nvcc" ]] || { echo "error: no nvcc under $CU" >&2; exit 1; }

# Linker names for the versioned sonames of the wheels.
for lib in cublas cublasLt cudart nvrtc; do
    ln -sf "lib$lib.so.13" "$CU/lib/lib$lib.so"
done
ln -sf libcurand.so.10 "$CU/lib/libcurand.so"

# A link-only libcuda: every driver entry point cudarc declares, returning an error.
REGISTRY=${CARGO_HOME:-$HOME/.cargo}/registry/src
SYS=$(ls "$REGISTRY"/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z "$SYS" ]]; then
    (cd "$ROOT" && cargo fetch -q)
    SYS=$(ls "$REGISTRY"/*/cudarc-0.19.*/src/driver/sys/mod.rs | sort -V | tail -n1)
fi
mkdir -p "$CU/lib/stubs"
if [[ ! -f "$CU/lib/stubs/libcuda.so" || "$SYS" -nt "$CU/lib/stubs/libcuda.so" ]]; then
    grep -oE 'fn cu[A-Za-z0-9_]+\(' "$SYS" | sed 's/^fn //; s/($//' | sort -u |
        awk '{ print "int " $1 "(void) { return 999; }" }' >"$CU/lib/stubs/libcuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$CU/lib/stubs/libcuda-stub.c"
    echo "== libcuda stub: $(wc -l <"$CU/lib/stubs/libcuda-stub.c") entry points from $SYS"
fi

export PATH="$CU/bin:$PATH" CUDA_HOME="$CU" CUDA_PATH="$CU" CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR="$TARGET"
echo "== $(nvcc --version | tail -n2 | head -n1); CUDA_COMPUTE_CAP=$CAP; target $TARGET"
T1=$(date +%s)
(cd "$ROOT" && cargo build --release --features cuda --bin vramplan)
T2=$(date +%s)
if [[ $CLIPPY == 1 ]]; then
    (cd "$ROOT" && cargo clippy --release --features cuda --all-targets -- -D warnings)
fi

BIN=$TARGET/release/vramplan
NAME=vramplan-cuda13-sm$CAP-$(uname -m)
mkdir -p "$DIST"
gzip -9 -c "$BIN" >"$DIST/$NAME.gz"
{
    echo "$NAME: vramplan $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?') built $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "candle CUDA backend, CUDA 13.0 (nvcc from PyPI), kernels for sm_${CAP}a (CUDA_COMPUTE_CAP=$CAP)"
    echo
    echo "Shared libraries it needs (DT_NEEDED):"
    readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/  \1/p'
    echo
    echo "ldd here (libcuda.so.1 is only a link stub on this machine):"
    LD_LIBRARY_PATH="$CU/lib" ldd "$BIN" | sed 's/^\s*/  /'
    echo
    echo "On the GPU machine (driver 580 provides libcuda.so.1; PyTorch's wheels the rest):"
    echo "  gunzip -k $NAME.gz && chmod +x $NAME"
    echo "  export LD_LIBRARY_PATH=\$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], \"cu13\", \"lib\"))'):\$LD_LIBRARY_PATH"
    echo "  ldd ./$NAME | grep 'not found'   # must print nothing"
    echo "  ./$NAME probe CONFIG --device cuda"
} >"$DIST/$NAME.txt"
T3=$(date +%s)
echo "== built in $((T2 - T1)) s (all steps $((T3 - T0)) s); binary $(stat -c %s "$BIN") bytes, $DIST/$NAME.gz $(stat -c %s "$DIST/$NAME.gz") bytes"
cat "$DIST/$NAME.txt"
