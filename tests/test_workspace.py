"""gap_study.pipeline.workspace: copies of the project for the end-to-end tests and benchmarks."""

import subprocess

from gap_study.pipeline.workspace import copy_project


def test_a_project_copy_holds_what_git_would_commit_and_nothing_ignored(tmp_path):
    source, target = tmp_path / "project", tmp_path / "copy"
    (source / "src").mkdir(parents=True)
    (source / ".gitignore").write_text("models/\n")
    (source / "src" / "tracked.py").write_text("tracked")
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    subprocess.run(["git", "add", "."], cwd=source, check=True)
    (source / "new.py").write_text("new, not ignored")
    (source / "models").mkdir()
    (source / "models" / "run.pt").write_text("generated")
    copy_project(source, target)
    copied = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert copied == [".gitignore", "new.py", "src/tracked.py"]
    assert (target / "src" / "tracked.py").read_text() == "tracked"
