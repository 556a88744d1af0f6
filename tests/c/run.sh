#!/usr/bin/env bash
# Build and run the pure-C kernel tests (tests/c/test_kernel.c, and the
# reduced-precision GEMM's tests/c/test_qgemm.c), no Python.
#   bash tests/c/run.sh [plain|asan|valgrind|all]     (default: plain)
# plain:    -O1 -g build, run
# asan:     AddressSanitizer + UndefinedBehaviorSanitizer (leak check on), run
# valgrind: the plain build under valgrind (skipped with a message if absent)
# all:      the three in turn
# Binaries go to build/ctest/ in the repository; works from any cwd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/build/ctest"
CC="${CC:-gcc}"
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -Werror)
SRCS=("$ROOT/tests/c/test_kernel.c" "$ROOT/csrc/gemm.c" "$ROOT/csrc/gru.c" "$ROOT/csrc/lstm.c"
      "$ROOT/csrc/rnn.c" "$ROOT/csrc/plan.c" "$ROOT/csrc/qgemm.c" "$ROOT/csrc/team.c"
      "$ROOT/csrc/ukernel.c")
QSRCS=("$ROOT/tests/c/test_qgemm.c" "$ROOT/csrc/qgemm.c")
mkdir -p "$OUT"

build() { # build <output> [extra flags...]
    local exe="$1"
    shift
    "$CC" "${CFLAGS[@]}" "$@" -pthread -I"$ROOT/csrc" "${SRCS[@]}" -lm -o "$exe"
    "$CC" "${CFLAGS[@]}" "$@" -I"$ROOT/csrc" "${QSRCS[@]}" -lm -o "${exe/test_kernel/test_qgemm}"
}

run_plain() {
    echo "== plain"
    build "$OUT/test_kernel"
    "$OUT/test_kernel"
    "$OUT/test_qgemm"
}

run_asan() {
    echo "== asan (address, undefined)"
    build "$OUT/test_kernel_asan" -fsanitize=address,undefined -fno-omit-frame-pointer \
        -fno-sanitize-recover=all
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
        UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}" "$OUT/test_kernel_asan"
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
        UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}" "$OUT/test_qgemm_asan"
}

run_valgrind() {
    echo "== valgrind"
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "valgrind not found: skipped"
        return 0
    fi
    build "$OUT/test_kernel"
    valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect -q \
        "$OUT/test_kernel"
    valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect -q \
        "$OUT/test_qgemm"
}

mode="${1:-plain}"
case "$mode" in
plain) run_plain ;;
asan) run_asan ;;
valgrind) run_valgrind ;;
all)
    run_plain
    run_asan
    run_valgrind
    ;;
*)
    echo "usage: $0 [plain|asan|valgrind|all]" >&2
    exit 2
    ;;
esac
