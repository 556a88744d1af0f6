"""The Linux wheel users install: tools/build_manylinux_wheel.sh builds the sdist, builds
the wheel from it (GCC compiles, zig links against glibc 2.17's symbols) and repairs it
to manylinux2014; this test checks what `auditwheel show` reports (manylinux_2_28 or
older), what the sdist and the wheel carry (LICENSE, the extras), and that the wheel
installs into a fresh virtual environment (no system site-packages) where
tests/wheel_smoke.py (forward/backward vs the NumPy oracle) passes against the installed
package, run from a directory outside the source tree.

Slow (a build from scratch and a fresh environment, about 1.5-2 minutes; the build tools
are kept in build/manylinux/ between runs): FUSEDRNN_SKIP_WHEEL_TEST=1 skips it. Linux
only (auditwheel), with gcc."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "build_manylinux_wheel.sh"

pytestmark = [
    pytest.mark.skipif(os.environ.get("FUSEDRNN_SKIP_WHEEL_TEST", "") not in ("", "0"),
                       reason="FUSEDRNN_SKIP_WHEEL_TEST is set"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux only"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc"),
]


def _run(cmd, cwd, env=None, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    return res.stdout


def _version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_manylinux_wheel_builds_installs_and_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    house, work = tmp_path / "wheelhouse", tmp_path / "cwd"
    work.mkdir()
    # 1. sdist -> wheel -> manylinux2014 repair, for this interpreter
    log = _run(["bash", SCRIPT, house], cwd=tmp_path,
               env=dict(env, PYTHON=sys.executable, FUSEDRNN_WHEEL_WORK=str(tmp_path / "build")))
    wheels = list(house.glob("fusedrnn-*.whl"))
    assert len(wheels) == 1, list(house.iterdir())
    wheel = wheels[0]
    # 2. the glibc it needs: auditwheel's own verdict, manylinux_2_28 or older
    tools = Path(re.search(r"^== build tools in (.+)$", log, re.M).group(1))
    show = _run([tools / "bin" / "python", "-m", "auditwheel", "show", wheel], cwd=work, env=env)
    tags = [(int(a), int(b)) for a, b in re.findall(r'"manylinux_(\d+)_(\d+)_\w+"', show)]
    assert tags and max(tags) <= (2, 28), show
    assert re.search(r"manylinux(2014|_2_17)_", wheel.name), wheel.name
    # 3. what the sdist and the wheel carry
    sdist = next((tmp_path / "build" / "sdist").glob("fusedrnn-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    for required in ("LICENSE", "README.md", "pyproject.toml", "CMakeLists.txt", "csrc/lstm.c",
                     "src/fusedrnn/_kernel.pyx", "tools/build_manylinux_wheel.sh"):
        assert required in members, required
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("fusedrnn/py.typed", "fusedrnn/_kernel.pyi", "fusedrnn/torch.py",
                     "fusedrnn/onnx.py"):
        assert required in names, required
    assert any(re.match(r"fusedrnn/_kernel\..*\.so$", n) for n in names), names
    licence = [n for n in names if re.match(r"fusedrnn-[^/]+\.dist-info/(licenses/)?LICENSE$", n)]
    assert len(licence) == 1, names
    assert "MIT License" in zipfile.ZipFile(wheel).read(licence[0]).decode()
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", meta.decode(), re.M))
    assert {"torch", "onnx", "examples", "all", "test"} <= extras, extras
    # 4. a fresh venv without system site-packages; the wheel with the dependencies it
    #    declares, from the local pip configuration
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    bindir = venv / "bin"
    py = bindir / "python"
    venv_env = dict(env, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    _run([py, "-m", "pip", "install", wheel], cwd=work, env=venv_env)
    # 5. the smoke test, from a directory outside the source tree
    smoke = work / "wheel_smoke.py"
    shutil.copy(ROOT / "tests" / "wheel_smoke.py", smoke)
    out = _run([py, smoke], cwd=work, env=venv_env)
    assert "arrays match the oracle" in out, out
    where = out.split(" from ", 1)[1].split(" ", 1)[0]
    assert Path(where).resolve().is_relative_to(venv.resolve()), where   # not the source tree
    assert f"fusedrnn {_version()} " in out, out                          # metadata version
    # the README's first command runs the demo on the installed package
    demo = _run([py, "-m", "fusedrnn.demo", "--steps", "5"], cwd=work, env=venv_env)
    assert "packed micro-kernel" in demo and "done: 5 steps" in demo, demo
    # the installed package carries its type information
    code = ("import importlib.resources as r; f = r.files('fusedrnn'); "
            "print(f.joinpath('py.typed').is_file(), f.joinpath('_kernel.pyi').is_file())")
    assert _run([py, "-c", code], cwd=work, env=venv_env).split() == ["True", "True"]
