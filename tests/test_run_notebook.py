import shutil
import subprocess
import sys

import nbformat
import pytest
import yaml

from gap_study.pipeline.params import ParamsError
from gap_study.pipeline.run_notebook import main, notebook_parameters


def test_notebook_receives_the_params_sections_it_declares(root):
    values = notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                                 {"heads": ["gmp"]})
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert values == {"heads": ["gmp"], "train": params["train"], "model": params["model"],
                      "device": params["device"], "compute": params["compute"]}


def test_an_override_the_notebook_does_not_declare_is_refused(root):
    with pytest.raises(ParamsError, match="has no parameter hed; its parameters are: heads"):
        notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                            {"hed": "gap"})


def test_invalid_params_stop_the_run_before_a_kernel_starts(root, tmp_path, capsys):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    output = tmp_path / "out.ipynb"
    code = main([str(root / "notebooks" / "train.ipynb"), str(output),
                 "--params-file", str(tmp_path / "params.yaml")])
    assert code == 2
    assert "train.epochs = -3" in capsys.readouterr().err
    assert not output.exists()


def test_a_missing_notebook_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "nope.ipynb"), str(tmp_path / "out.ipynb")]) == 2
    assert "nope.ipynb not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_cell_fails_the_run_and_keeps_the_executed_notebook(root, tmp_path, capsys):
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    nb = nbformat.v4.new_notebook(metadata=nbformat.read(
        root / "notebooks" / "train.ipynb", as_version=4).metadata)
    params_cell = nbformat.v4.new_code_cell('device = "cpu"')
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('the data is bad: ' + device)")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    output = tmp_path / "executed" / "broken.ipynb"
    code = main([str(tmp_path / "broken.ipynb"), str(output),
                 "--params-file", str(tmp_path / "params.yaml")])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed in cell" in err and "RuntimeError: the data is bad: auto" in err
    executed = nbformat.read(output, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError"


def test_the_stage_runner_validates_params_without_importing_torch_or_iri_grammars():
    # Every stage starts this runner before its kernel: what it imports is paid once per
    # stage (torch and jsonschema's IRI grammar took 4 s of each stage's 18 s here).
    probe = ("import sys, gap_study.pipeline.run_notebook; "
             "print(sorted(m for m in ('torch', 'rfc3987_syntax', 'lark') "
             "if sys.modules.get(m) is not None))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout
    assert shown.strip() == "[]"
