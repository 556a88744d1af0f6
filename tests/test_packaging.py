"""Packaging metadata: the version from the distribution metadata, the type
information (py.typed, the extension's stub in step with the extension), and
`import fusedrnn` not importing torch or onnx (fr.torch is loaded on first use)."""
import ast
import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import fusedrnn as fr
from fusedrnn import _kernel, _version

PKG = Path(fr.__file__).parent


def test_version_comes_from_the_metadata():
    assert fr.__version__ == importlib.metadata.version("fusedrnn")
    assert _version.version() == fr.__version__
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"## [{fr.__version__}]" in changelog


def test_py_typed_and_the_kernel_stub_match_the_extension():
    assert (PKG / "py.typed").is_file()
    stub = ast.parse((PKG / "_kernel.pyi").read_text())
    declared = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public = {n for n, v in vars(_kernel).items()
              if (inspect.isclass(v) or callable(v)) and getattr(v, "__module__", "") == _kernel.__name__
              and (not n.startswith("_") or n == "_load_scipy_blas")}
    assert public <= declared, public - declared
    assert declared <= set(vars(_kernel)), declared - set(vars(_kernel))
    # the signatures' argument names agree with the bindings' (Cython keeps them)
    for fn in stub.body:
        if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_"):
            real = getattr(_kernel, fn.name)
            code = getattr(real, "__code__", None)
            if code is not None:
                names = list(code.co_varnames[:code.co_argcount])
                assert [a.arg for a in fn.args.args] == names, fn.name


def test_import_is_light_and_fr_torch_is_lazy():
    code = ("import sys, fusedrnn as fr; heavy = [m for m in ('torch', 'onnx') if m in sys.modules]; "
            "assert not heavy, heavy; m = fr.torch; assert 'torch' in sys.modules; "
            "assert m.LSTM.__module__ == 'fusedrnn.torch'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
