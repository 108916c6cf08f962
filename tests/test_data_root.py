"""``data.root`` outside the project is accepted with a warning naming the folder it resolves
to; inside the project, and for the embedded digits (which read no file), nothing is said."""

import json
import warnings

import pytest
import yaml
from builders import md5_hash, small_idx_files

from gap_study.data.prepare import DataRootWarning, prepare_study_dataset
from gap_study.data.sources import HASH_OVERRIDES_ENV
from gap_study.pipeline.params import DataParams


@pytest.fixture
def project(tmp_path, root, monkeypatch):
    """A project folder, small MNIST files in ``outside/mnist`` beside it and a symbolic link
    to them in the project, their hashes registered."""
    files = small_idx_files(n_train=30, n_test=10)
    (tmp_path / "outside" / "mnist").mkdir(parents=True)
    for name, data in files.items():
        (tmp_path / "outside" / "mnist" / name).write_bytes(data)
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "raw").symlink_to(tmp_path / "outside")
    hashes = tmp_path / "hashes.json"
    hashes.write_text(json.dumps({"mnist": {n: md5_hash(d) for n, d in files.items()}}))
    monkeypatch.setenv(HASH_OVERRIDES_ENV, str(hashes))
    return tmp_path / "project"


def _settings(root, data_root: str, name: str = "mnist") -> DataParams:
    data = yaml.safe_load((root / "params.yaml").read_text())["data"]
    data.update(name=name, root=data_root, download=False, max_train=20,
                validation_fraction=0.5, two_objects=0)
    return DataParams.model_validate(data)


@pytest.mark.parametrize("how", ["absolute", "relative", "link"])
def test_a_data_root_outside_the_project_is_used_with_a_warning_naming_the_real_folder(
        project, root, how):
    outside = project.parent / "outside"
    data_root = {"absolute": str(outside), "relative": "../outside", "link": "data/raw"}[how]
    with pytest.warns(DataRootWarning) as caught:
        dataset = prepare_study_dataset(_settings(root, data_root), project)
    assert len(dataset.y_test) == 10
    (warning,) = [w for w in caught if w.category is DataRootWarning]
    assert str(warning.message).startswith(
        f"data.root = {data_root!r} is {outside.resolve()}, outside the project "
        f"{project.resolve()}: mnist's files are read from that folder")


@pytest.mark.parametrize(("name", "data_root"), [("mnist", "inside"), ("digits", "/elsewhere")])
def test_a_data_root_in_the_project_or_unused_is_not_warned_about(project, root, name,
                                                                   data_root):
    real = project / "real" / "mnist"
    real.mkdir(parents=True)
    for path in (project.parent / "outside" / "mnist").iterdir():
        (real / path.name).write_bytes(path.read_bytes())
    settings = _settings(root, "real" if data_root == "inside" else data_root, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_study_dataset(settings, project)
    assert [w for w in caught if w.category is DataRootWarning] == []
