#!/usr/bin/env bash
# Build and run the pure-C kernel tests (tests/c/test_kernel.c, the reduced-precision
# forwards' tests/c/test_reduced.c and GEMM's tests/c/test_qgemm.c), no Python.
#   bash tests/c/run.sh [plain|asan|valgrind|all]     (default: plain)
# plain:    -O1 -g build, run
# asan:     AddressSanitizer + UndefinedBehaviorSanitizer (leak check on), run
# valgrind: the plain build under valgrind (skipped with a message if absent), finite
#           differences on fewer elements (FR_TEST_FD_MAX=4)
# all:      the three in turn
# Binaries go to build/ctest/ in the repository; works from any cwd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$ROOT/build/ctest"
CC="${CC:-gcc}"
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -Werror)
# the kernel (every tests/c/test_<name>.c but test_qgemm links it all), the slowest to
# compile first (ukernel.c takes longest: the build's critical path)
KSRCS=("$ROOT/csrc/ukernel.c" "$ROOT/csrc/qgemm.c" "$ROOT/csrc/lstm.c" "$ROOT/csrc/rnn.c"
       "$ROOT/csrc/gru.c" "$ROOT/csrc/gemm.c" "$ROOT/csrc/team.c" "$ROOT/csrc/plan.c")
TESTS=(kernel reduced qgemm)  # test_kernel.c, test_reduced.c (reduced-precision forwards), test_qgemm.c
mkdir -p "$OUT"

build() { # build <suffix> [extra flags...]: $OUT/test_<name><suffix> for each test
    # Each source is compiled once per flavour into $OUT/obj<suffix>/ (the kernel's objects
    # are shared by the tests that link it), $(nproc) compilers at a time, then linked.
    local sfx="$1"
    shift
    local obj="$OUT/obj$sfx" jobs
    jobs="$(nproc 2>/dev/null || echo 2)"
    mkdir -p "$obj"
    local srcs=("${KSRCS[@]}")
    for t in "${TESTS[@]}"; do srcs+=("$ROOT/tests/c/test_$t.c"); done
    local pids=() src running=0
    for src in "${srcs[@]}"; do
        if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
        "$CC" "${CFLAGS[@]}" "$@" -pthread -I"$ROOT/csrc" -c "$src" -o "$obj/$(basename "$src" .c).o" &
        pids+=($!)
        running=$((running + 1))
    done
    # wait on each compiler by pid: a failed compile fails the build (set -e)
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    local kobjs=() k
    for k in "${KSRCS[@]}"; do kobjs+=("$obj/$(basename "$k" .c).o"); done
    for t in "${TESTS[@]}"; do
        local objs=("${kobjs[@]}")
        [ "$t" = qgemm ] && objs=("$obj/qgemm.o")
        "$CC" "${CFLAGS[@]}" "$@" -pthread "$obj/test_$t.o" "${objs[@]}" -lm -o "$OUT/test_$t$sfx"
    done
}
plain_built=0

run_plain() {
    echo "== plain"
    build ""
    plain_built=1
    for t in "${TESTS[@]}"; do "$OUT/test_$t"; done
}

run_asan() {
    echo "== asan (address, undefined)"
    build _asan -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
    for t in "${TESTS[@]}"; do
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
            UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}" "$OUT/test_${t}_asan"
    done
}

run_valgrind() {
    echo "== valgrind"
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "valgrind not found: skipped"
        return 0
    fi
    [ "$plain_built" = 1 ] || build ""
    # valgrind is for memory errors: finite differences on a few elements per parameter
    # (the plain and asan runs check them all)
    for t in "${TESTS[@]}"; do
        FR_TEST_FD_MAX=4 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            -q "$OUT/test_$t"
    done
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
