"""environment.yml (conda) and pyproject.toml (pip) install the same packages."""

import re
import tomllib

import yaml

CONDA_NAMES = {"pytorch": "torch"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return CONDA_NAMES.get(name.lower(), name.lower()), spec.replace("==", "=")


def test_conda_environment_matches_pyproject(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pip = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    env = yaml.safe_load((root / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)
             and not d.startswith(("python", "pip"))]
    assert dict(map(_name_and_spec, conda)) == dict(map(_name_and_spec, pip))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["--editable ."]


def test_ci_runs_exactly_the_readmes_test_command(root):
    assert "make test" in (root / "README.md").read_text()
    commands = [line for line in (root / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
