"""The light report modules stay light: ``gap_study.sweep`` and the report stage's tables,
claims, facts and template do not pull in plotting or torch, and the figures need no torch;
nor do the prepare and report stages' notebooks, whose kernels would spend a second or more
importing it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
HEAVY = ("matplotlib", "seaborn", "torch")


def _loaded_after(statement: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of ``modules`` are in ``sys.modules`` after ``statement`` in a fresh Python."""
    code = (f"import sys\n{statement}\n"
            f"print(' '.join(m for m in {modules!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    return done.stdout.split()


def test_importing_sweep_leaves_out_matplotlib_seaborn_and_torch():
    assert _loaded_after("import gap_study.sweep", (*HEAVY, "gap_study.report.stats")) \
        == ["gap_study.report.stats"]


def test_report_modules_but_figures_import_neither_plotting_nor_torch():
    modules = ("stats", "bootstrap", "tables", "claims", "dvc_views", "formatting", "mechanism",
               "mechanism_distance", "pooling_facts", "facts", "render", "html")
    assert _loaded_after("\n".join(f"import gap_study.report.{m}" for m in modules)) == []


def test_the_figures_need_no_torch():
    assert _loaded_after("import gap_study.report.figures", ("torch",)) == []


def _imports_of(notebook: Path) -> str:
    """Every import statement of ``notebook``'s code cells, in order."""
    code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells
                     if c.cell_type == "code")
    return "\n".join(ast.unparse(node) for node in ast.parse(code).body
                     if isinstance(node, ast.Import | ast.ImportFrom))


def test_the_prepare_and_report_notebooks_import_no_torch():
    for name in ("prepare_data", "report"):
        imports = _imports_of(ROOT / "notebooks" / f"{name}.ipynb")
        assert "gap_study" in imports, name  # the cells were read
        assert _loaded_after(imports, ("torch",)) == [], name
