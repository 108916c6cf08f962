import subprocess

import pytest
import torch

from gap_study.pipeline.provenance import cpu_name, git_commit, run_environment, run_record


def _git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_is_dirty_for_changed_sources_not_for_the_pipelines_outputs_or_params(tmp_path):
    assert git_commit(tmp_path) is None  # not a repository
    _git(tmp_path, "init", "-q")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "params.yaml").write_text("epochs: 3\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text("{}\n")
    (tmp_path / "train.py").write_text("epochs = 3\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path) == head

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what each stage does
    (tmp_path / "reports" / "metrics.json").unlink()  # DVC deletes a stage's outputs first
    (tmp_path / "params.yaml").write_text("epochs: 4\n")  # dvc exp run -S epochs=4
    assert git_commit(tmp_path) == head
    (tmp_path / "train.py").write_text("epochs = 4\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_run_environment_records_the_cpu_and_the_instruction_set_torch_chose_kernels_for():
    record = run_environment("cpu")
    assert record["device"] == "cpu" and record["device_name"] == record["cpu"] == cpu_name()
    assert record["cpu"].strip()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch"] == torch.__version__ and record["torch_threads"] >= 1


def test_run_environment_says_whether_numba_ran_the_blurmax_kernel(monkeypatch):
    from importlib import metadata
    numba = pytest.importorskip("numba")
    assert run_environment("cpu")["numba"] == numba.__version__

    def absent(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", absent)
    assert run_environment("cpu")["numba"] is None


def test_a_run_record_holds_the_params_the_facts_and_the_environment(tmp_path):
    record = run_record({"head": "gap", "train": {"epochs": 3}}, "cpu", tmp_path,
                        dataset={"name": "digits"})
    assert record["head"] == "gap" and record["train"] == {"epochs": 3}
    assert record["dataset"] == {"name": "digits"}
    assert record["environment"]["device"] == "cpu"
    assert record["environment"]["git_commit"] is None  # tmp_path is not a repository
