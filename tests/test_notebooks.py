"""The source notebooks, dvc.yaml and params.yaml cannot drift apart silently."""

import ast
import copy
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def parameters_cell(nb) -> dict:
    """The values assigned in the notebook's one cell tagged ``parameters``."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    defaults = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            "the parameters cell holds plain assignments only"
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def notebook_problems(nb, params: dict) -> list[str]:
    """What is wrong with a source notebook; an empty list when nothing is."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count):
            problems.append(f"cell {i} has outputs or an execution count")
    declared = parameters_cell(nb)
    for name, default in declared.items():
        if name in params and default is not None:
            problems.append(f"parameter {name} = {default!r} copies params.yaml: set it to None")
    sections = [name for name in declared if name in params]
    call = next((i for i, c in enumerate(nb.cells) if "or_params_yaml(" in c.source), None)
    if sections and (call is None or not all(f"{n}={n}" in nb.cells[call].source
                                              for n in sections)):
        problems.append(f"no cell passes {', '.join(sections)} to or_params_yaml, so the "
                        "notebook cannot run by hand")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec is not python3")
    if "language_info" not in nb.metadata:
        problems.append("language_info is missing")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebook_is_clean_and_leaves_every_default_to_params_yaml(path):
    assert notebook_problems(nbformat.read(path, as_version=4), PARAMS) == []


def test_a_notebook_with_outputs_or_a_copied_default_is_caught():
    nb = nbformat.read(ROOT / "notebooks" / "train.ipynb", as_version=4)
    copied = copy.deepcopy(nb)
    cell = next(c for c in copied.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace("train = None", 'train = {"epochs": 3}')
    assert notebook_problems(copied, PARAMS) == [
        "parameter train = {'epochs': 3} copies params.yaml: set it to None"]
    uncalled = copy.deepcopy(nb)
    uncalled.cells = [c for c in uncalled.cells if "or_params_yaml(" not in c.source]
    assert any("or_params_yaml" in p for p in notebook_problems(uncalled, PARAMS))
    executed = copy.deepcopy(nb)
    executed.cells[-1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    assert notebook_problems(executed, PARAMS) == [
        f"cell {len(nb.cells) - 1} has outputs or an execution count"]


def _stages():
    """``(stage name, stage dict, notebook path)`` for every stage of dvc.yaml that runs a
    notebook (all but ``check``)."""
    for name, stage in DVC["stages"].items():
        if (found := re.search(r"(notebooks/\S+\.ipynb)", stage["cmd"])) is not None:
            yield name, stage, ROOT / found.group(1)


def _module_file(module: str) -> Path:
    """The source file of a ``gap_study`` module: ``a/b.py``, or ``a/b/__init__.py`` for a
    package."""
    path = ROOT / "src" / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _gap_study_imports(source: str) -> set[str]:
    """The ``gap_study`` modules ``source`` imports; ``from package import module`` names the
    module and the package (whose ``__init__`` runs first)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gap_study"):
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names
                           if _module_file(f"{node.module}.{alias.name}").exists())
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("gap_study."))
    return modules


def _module_closure(modules: set[str]) -> set[str]:
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if "." in module:  # a module's packages run first: gap_study.report for .report.stats
            todo.append(module.rsplit(".", 1)[0])
        todo.extend(_gap_study_imports(_module_file(module).read_text()))
    return seen


@pytest.mark.parametrize("name, stage, notebook", list(_stages()), ids=lambda v: str(v)[:20])
def test_stage_declares_exactly_the_params_its_notebook_reads(name, stage, notebook):
    declared = parameters_cell(nbformat.read(notebook, as_version=4))
    from_params = {p for p in declared if p in PARAMS}
    # a stage may list some keys of a section (a change elsewhere in it cannot change the
    # stage's result); each must exist
    assert {p.split(".")[0] for p in stage["params"]} == from_params, name
    for dotted in (p for p in stage["params"] if "." in p):
        section, key = dotted.split(".", 1)
        assert key in PARAMS[section], f"{name}: {dotted} is not in params.yaml"
    passed = set(re.findall(r"-p (\w+) ", stage["cmd"] + " "))
    assert passed <= set(declared) and passed.isdisjoint(PARAMS), name


@pytest.mark.parametrize("stage, section, keys", [
    ("tune", "train", "gap_study.stages.tune.TRAIN_KEYS"),
    ("mechanism", "evaluate", "gap_study.stages.mechanism.EVALUATE_KEYS"),
])
def test_a_run_record_holds_the_keys_of_a_section_its_stage_declares(stage, section, keys):
    # a stage that declares some keys of a section records those: a change of another key
    # reruns nothing, and the record would go stale
    import importlib

    module, name = keys.rsplit(".", 1)
    declared = {p.split(".", 1)[1] for p in DVC["stages"][stage]["params"]
                if p.startswith(f"{section}.")}
    assert set(getattr(importlib.import_module(module), name)) == declared
    code = "".join(c.source for c in nbformat.read(ROOT / "notebooks" / f"{stage}.ipynb",
                                                      as_version=4).cells)
    assert f'"{section}": {{key: {section}[key] for key in {name}}}' in code


def _record_keys(code: str) -> set[str] | None:
    """The string keys of the dict a notebook assigns to ``record`` (its run record's params),
    or ``None`` where it writes no run record."""
    for node in ast.walk(ast.parse(code)):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and [getattr(t, "id", None) for t in node.targets] == ["record"]):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return None


@pytest.mark.parametrize("name, stage, notebook", list(_stages()), ids=lambda v: str(v)[:20])
def test_a_run_record_holds_every_param_its_stage_declares(name, stage, notebook):
    # a section recorded whole, or the keys of it the stage declares, each under its own name
    code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells
                     if c.cell_type == "code")
    keys = _record_keys(code)
    if keys is None:
        assert "run_record(" not in code, name
        return
    for section in {p.split(".")[0] for p in stage["params"]}:
        partial = [p.split(".", 1)[1] for p in stage["params"] if p.startswith(f"{section}.")]
        assert section in keys or (partial and set(partial) <= keys), f"{name}: {section}"


@pytest.mark.parametrize("name, stage, notebook", list(_stages()), ids=lambda v: str(v)[:20])
def test_stage_depends_on_its_notebook_and_every_module_it_imports(name, stage, notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    modules = _module_closure(_gap_study_imports(code) | {"gap_study.pipeline.run_notebook"})
    expected = {_module_file(m).relative_to(ROOT).as_posix() for m in modules}
    declared = {d for d in stage["deps"] if d.startswith("src/") and d.endswith(".py")}
    assert declared == expected, name
    assert notebook.relative_to(ROOT).as_posix() in stage["deps"]


def test_the_check_stage_runs_first_on_the_whole_params_yaml_and_every_module_it_imports():
    check = DVC["stages"]["check"]
    assert check["cmd"] == "python -m gap_study.pipeline.check"
    modules = _module_closure({"gap_study.pipeline.check"})
    assert set(check["deps"]) == {"params.yaml"} | {
        _module_file(m).relative_to(ROOT).as_posix() for m in modules}
    assert check["outs"] == ["reports/params_checked.txt"]
    assert "params" not in check  # the whole file: a renamed key must reach it, not DVC
    later = [name for name, stage in DVC["stages"].items()
             if "reports/params_checked.txt" not in stage.get("deps", [])]
    assert later == ["check"], "every other stage must depend on the check stage's stamp"
    assert len(list(_stages())) == len(DVC["stages"]) - 1


def test_dvc_lock_names_only_stages_of_dvc_yaml():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    stale = sorted(set(lock["stages"]) - set(DVC["stages"]))
    assert stale == [], f"dvc.lock holds stages dvc.yaml no longer has: {stale}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_by_hand_a_notebook_starts_with_the_sections_of_params_yaml(path, monkeypatch):
    from gap_study.pipeline.params import load_params

    nb = nbformat.read(path, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    monkeypatch.chdir(ROOT / "notebooks")  # where JupyterLab runs it
    namespace: dict = {}
    for cell in nb.cells[first:first + 2]:  # the parameters cell and the one reading params.yaml
        exec(compile(cell.source, str(path), "exec"), namespace)
    settings = load_params(ROOT / "params.yaml").model_dump(mode="json")
    sections = [name for name in parameters_cell(nb) if name in settings]
    assert sections and {n: namespace[n] for n in sections} == {n: settings[n] for n in sections}
