"""Nothing in the project unpickles a file: checkpoints load with weights_only, arrays
without pickle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "src" / "gap_study").rglob("*.py"))


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_source_unpickles_a_file(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in {"pickle", "dill", "cloudpickle", "joblib"}
                           for n in names), f"{path.name}:{node.lineno} imports a pickler"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "load" and getattr(node.func.value, "id", "") == "torch":
                flag = _keyword(node, "weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, \
                    f"{path.name}:{node.lineno} torch.load without weights_only=True"
            if node.func.attr == "load" and getattr(node.func.value, "id", "") == "np":
                flag = _keyword(node, "allow_pickle")
                assert isinstance(flag, ast.Constant) and flag.value is False, \
                    f"{path.name}:{node.lineno} np.load without allow_pickle=False"
