"""gap_study.cli, the `gap-study` command: each subcommand on a small project folder."""

import subprocess
import sys
import tomllib

import pytest
import yaml

from gap_study import cli, replicate, sweep


@pytest.fixture
def project(tmp_path, monkeypatch, root):
    """An empty project folder holding the real params.yaml, as the working directory."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # any folder inside the project
    return tmp_path


def test_check_finds_the_projects_params_valid_and_writes_nothing(project, capsys):
    assert cli.main(["check"]) == 0
    assert "params.yaml is valid" in capsys.readouterr().out
    assert sorted(p.name for p in project.iterdir()) == ["dvc.yaml", "notebooks", "params.yaml"]


def test_check_names_a_refused_value_and_exits_2(project, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = -1
    bad = project / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    assert cli.main(["check", "--params-file", str(bad)]) == 2
    assert "train.epochs = -1" in capsys.readouterr().err


def test_sweep_hands_its_options_to_the_sweep_module(monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "main", lambda argv: calls.append(argv) or 5)
    assert cli.main(["sweep", "--repo", "there", "--confidence", "0.9"]) == 5
    assert calls == [["--repo", "there", "--confidence", "0.9"]]


def test_replicate_hands_its_command_and_options_to_the_replicate_module(monkeypatch):
    calls = []
    monkeypatch.setattr(replicate, "main", lambda argv: calls.append(argv) or 3)
    assert cli.main(["replicate", "table", "digits", "mnist_5k"]) == 3
    assert calls == [["table", "digits", "mnist_5k"]]


def test_sweep_help_lists_the_sweep_modules_options(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["sweep", "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0
    assert all(option in shown for option in ("--repo", "--out", "--confidence"))


def test_report_open_shows_the_html_report_in_a_browser(project, monkeypatch, capsys):
    (project / "reports").mkdir()
    (project / "reports" / "report.html").write_text("<html></html>")
    opened = []
    monkeypatch.setattr(cli.webbrowser, "open", lambda url: opened.append(url) or True)
    assert cli.main(["report"]) == 0 and opened == []
    assert cli.main(["report", "--open"]) == 0
    assert opened == [(project / "reports" / "report.html").resolve().as_uri()]
    assert capsys.readouterr().out.splitlines()[0].endswith("report.html")


def test_report_open_without_a_browser_says_where_the_file_is(project, monkeypatch, capsys):
    (project / "reports").mkdir()
    (project / "reports" / "report.html").write_text("<html></html>")
    monkeypatch.setattr(cli.webbrowser, "open", lambda url: False)
    assert cli.main(["report", "--open"]) == 1
    assert "open " in capsys.readouterr().err


def test_report_before_the_pipeline_ran_says_to_run_it(project, capsys):
    assert cli.main(["report", "--open"]) == 1
    assert "dvc repro" in capsys.readouterr().err


def test_outside_a_project_every_command_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report"]) == 2 and cli.main(["check"]) == 2
    assert "inside the gap-study project" in capsys.readouterr().err


@pytest.mark.parametrize("command, words", [("check", "params.yaml"),
                                             ("report", "web browser")])
def test_each_command_explains_itself(command, words, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0 and words in capsys.readouterr().out


def test_an_unknown_option_is_refused():
    with pytest.raises(SystemExit) as done:
        cli.main(["report", "--opne"])
    assert done.value.code == 2


def test_the_command_is_installed_as_gap_study_and_runs_as_a_module(root):
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"gap-study": "gap_study.cli:main"}
    shown = subprocess.run([sys.executable, "-m", "gap_study", "--help"], capture_output=True,
                           text=True, cwd=root, env={"PYTHONPATH": str(root / "src")})
    assert shown.returncode == 0
    assert all(c in shown.stdout for c in ("check", "sweep", "replicate", "report"))
