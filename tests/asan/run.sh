#!/usr/bin/env bash
# The Python test suite (a fast subset, small shapes) against an ASan+UBSan build
# of the extension (issue 7).
#
#   bash tests/asan/run.sh [SOURCE_DIR]       # default: this checkout
#
# Builds fusedrnn with -Ccmake.define.FUSEDRNN_SANITIZE=ON (CMakeLists.txt adds
# -fsanitize=address,undefined -fno-sanitize-recover=undefined to the kernel,
# PUBLIC, so the Cython extension gets it too) into its own build directory and
# its own virtual environment, build/asan/{cmake,venv} under SOURCE_DIR: the
# editable install and the CI's .venv are not touched. Then runs pytest with
# libasan preloaded (CPython itself is not instrumented; without the preload the
# import fails with "ASan runtime does not come first").
#
# Any ASan report (heap/stack overflow, use after free, ...) or UBSan report
# aborts the test process, and the script fails. Takes ~2-4 minutes on 2 cores
# (the first run also downloads numpy, scipy, cmake, ... into the venv).
#
# Environment: ASAN_PYTEST_ARGS replaces the test selection below (e.g. "-k lstm
# tests/test_errors.py"); ASAN_BUILD_DIR moves build/asan; ASAN_STAGE=build stops
# after the build, ASAN_STAGE=test runs the tests on the build already made (CI
# builds while the main test suite runs, and tests afterwards).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "${1:-$HERE/../..}" && pwd)"
OUT="${ASAN_BUILD_DIR:-$SRC/build/asan}"
VENV="$OUT/venv"
PY="${PYTHON:-python3}"

LIBASAN="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$LIBASAN" ]; then
    echo "tests/asan/run.sh: gcc has no libasan.so ($LIBASAN); install gcc's sanitizer runtime" >&2
    exit 1
fi

STAGE="${ASAN_STAGE:-all}"
case "$STAGE" in all|build|test) ;; *) echo "tests/asan/run.sh: ASAN_STAGE must be all, build or test, got $STAGE" >&2; exit 2 ;; esac

if [ "$STAGE" != test ]; then
echo "== ASan venv: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
# onnx: the file-reader error tests (tests/test_errors.py) read ONNX models
"$VENV/bin/python" -m pip install -q "numpy>=1.22" "scipy>=1.8" "pytest>=7" "hypothesis>=6" \
    "onnx>=1.14" "threadpoolctl>=3" "scikit-build-core>=0.11" "cython>=3.1" "cython-cmake>=0.2" "cmake>=3.21" ninja

echo "== ASan+UBSan build of $SRC"
# Non-editable, into the venv; build tree kept for incremental rebuilds.
"$VENV/bin/python" -m pip install -q --no-build-isolation \
    -Cbuild-dir="$OUT/cmake" \
    -Ccmake.define.FUSEDRNN_SANITIZE=ON \
    -Ccmake.build-type=RelWithDebInfo \
    "$SRC"
fi
[ "$STAGE" = build ] && { echo "== ASan build done"; exit 0; }

cd "$SRC"
# importing the extension needs the preload: find it without importing
SO="$(ls "$VENV"/lib/python3*/site-packages/fusedrnn/_kernel*.so)"
case "$SO" in
    "$VENV"/*) ;;
    *) echo "tests/asan/run.sh: the extension is not the venv's: $SO" >&2; exit 1 ;;
esac
# ldd's output is read whole before grep: `ldd | grep -q` under pipefail fails
# at random when grep exits at the first match and ldd dies of SIGPIPE.
LINKS="$(ldd "$SO")"
ASAN_LIB="$(grep -o 'libasan[^ ]*' <<<"$LINKS" || true)"
UBSAN_LIB="$(grep -o 'libubsan[^ ]*' <<<"$LINKS" || true)"
if [ -z "$ASAN_LIB" ]; then
    echo "tests/asan/run.sh: $SO is not linked against libasan (FUSEDRNN_SANITIZE ignored?)" >&2
    echo "$LINKS" >&2
    exit 1
fi
echo "extension: $SO (links $ASAN_LIB${UBSAN_LIB:+, $UBSAN_LIB})"

export LD_PRELOAD="$LIBASAN"
# detect_leaks=0: CPython's own allocations at exit are not ours.
# allocator_may_return_null=1: a huge allocation is NumPy's MemoryError, as without ASan.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# smaller budgets for the robustness tests (they read these)
export FUSEDRNN_EXAMPLES_SCALE="${FUSEDRNN_EXAMPLES_SCALE:-1}"
export FUSEDRNN_THREAD_CALLS="${FUSEDRNN_THREAD_CALLS:-100}"
export FUSEDRNN_DRIFT_T="${FUSEDRNN_DRIFT_T:-2000}"
export OPENBLAS_NUM_THREADS=1

# Make sure the tests see the ASan build, not the source tree or another install.
VENV="$VENV" "$VENV/bin/python" - <<'EOF'
import os, fusedrnn
from fusedrnn import _kernel
print("fusedrnn from", fusedrnn.__file__)
assert os.path.realpath(_kernel.__file__).startswith(os.path.realpath(os.environ["VENV"])), _kernel.__file__
EOF

if [ -n "${ASAN_PYTEST_ARGS:-}" ]; then
    # shellcheck disable=SC2086
    set -- $ASAN_PYTEST_ARGS
else
    # The tests that drive the kernel; not the torch/onnx comparisons (those
    # packages are not in this venv), not RSS flatness (ASan's quarantine keeps
    # freed memory on purpose), not timing (the GIL-overlap test).
    set -- tests/test_errors.py tests/test_kernel_vs_reference.py tests/test_api.py \
        tests/test_chunked.py tests/test_gemm.py tests/test_properties.py tests/test_numerics.py \
        tests/test_threads.py tests/test_fuzz_api.py tests/test_sizes.py \
        -k "not gil_released"
    # feature tests added since (augmented LSTM, stacks, ...) when present
    for f in tests/test_augmented_vs_reference.py tests/test_streaming.py; do
        [ -e "$f" ] && set -- "$f" "$@"
    done
fi
echo "== pytest under ASan+UBSan: $*"
# --capture=sys: pytest captures Python-level output only, so a sanitizer report
# (written by C code to file descriptor 2) reaches the log even when it aborts.
"$VENV/bin/python" -m pytest -q -x -p no:cacheprovider --capture=sys "$@"
