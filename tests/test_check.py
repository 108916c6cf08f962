"""The check stage: the whole params.yaml is validated before DVC deletes any stage's outputs."""

import dataclasses

import pytest
import yaml
from builders import data_set, run_command, tiny_repository

from gap_study.pipeline.check import STAMP_TEXT, main


def _write(path, params):
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_valid_params_write_the_same_stamp_every_time(params_raw, tmp_path):
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "r" / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 0
    assert stamp.read_text() == STAMP_TEXT  # no date, no path: a valid edit reruns nothing


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["train"].update(epoch=p["train"].pop("epochs")),
     "train.epoch: unknown key (did you mean 'epochs'?)"),
    (lambda p: p["train"].update(batch_size="64"),
     "train.batch_size = '64': Input should be a valid integer"),
    (lambda p: p["compute"].update(workers=0),
     "compute.workers = 0: Input should be greater than 0"),
])
def test_bad_params_are_refused_with_the_projects_message_and_no_stamp(
        params_raw, tmp_path, capsys, change, expected):
    change(params_raw)
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "no output was deleted" in err
    assert not stamp.exists()


def test_a_missing_package_of_the_data_set_is_refused_with_its_fix_and_no_stamp(
        params_raw, tmp_path, capsys, monkeypatch):
    from gap_study.data import packaged

    absent = dataclasses.replace(packaged.MNIST_5K, package="gap_study_no_such_package")
    monkeypatch.setitem(packaged.PACKAGED, "mnist_5k", absent)
    params_raw["data"]["name"] = "mnist_5k"
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 2
    err = capsys.readouterr().err
    assert "pip install gap_study_no_such_package==0.25.0" in err
    assert "no output was deleted" in err and not stamp.exists()
    monkeypatch.setitem(packaged.PACKAGED, "mnist_5k", packaged.MNIST_5K)  # the real file
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 0


def test_a_device_this_machine_lacks_is_refused_where_the_runs_compute_here(
        params_raw, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params_raw["device"] = "cuda"
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 2
    err = capsys.readouterr().err
    assert "device = 'cuda': device 'cuda' was asked for but CUDA is not available" in err
    assert "use device: auto or cpu" in err and not stamp.exists()
    # a Dask scheduler elsewhere: its workers may have a GPU that this machine lacks
    params_raw["compute"]["scheduler"] = "tcp://10.0.0.5:8786"
    params = _write(tmp_path / "params.yaml", params_raw)
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 0


def test_more_threads_than_cores_is_warned_about_and_still_valid(params_raw, tmp_path, capsys,
                                                                  monkeypatch):
    import dask.system

    monkeypatch.setattr(dask.system, "CPU_COUNT", 2)
    params_raw["compute"].update(scheduler="local", workers=2, threads_per_run=2)
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 0
    assert ("2 run(s) of 2 thread(s), 4 threads on 2 cores" in capsys.readouterr().err
            and stamp.exists())
    params_raw["compute"].update(workers=None, threads_per_run=1)  # one worker per core
    main(["--params-file", str(_write(tmp_path / "params.yaml", params_raw)),
          "--stamp", str(stamp)])
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_renamed_key_stops_dvc_repro_before_any_stage_loses_its_outputs(tmp_path):
    repo = tiny_repository(tmp_path / "repo", ["gap"])
    # outputs of an earlier run: without the check stage, `dvc repro` ran `prepare` first,
    # deleting them, and only then did its runner refuse the params
    prepared = repo / "data" / "prepared" / "dataset.npz"
    prepared.parent.mkdir(parents=True, exist_ok=True)
    prepared.write_bytes(b"an earlier run's data set")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epoch"] = params["train"].pop("epochs")
    _write(repo / "params.yaml", params)
    failed = run_command(["dvc", "repro"], repo, check=False)
    assert failed.returncode != 0
    shown = failed.stdout + failed.stderr
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in shown
    assert "Running stage 'prepare'" not in shown
    assert "are missing" not in shown  # DVC's own "Parameters 'train.epochs' are missing"
    assert prepared.read_bytes() == b"an earlier run's data set"


def test_more_mechanism_test_images_than_the_data_set_keeps_are_refused_before_any_stage(
        params_raw, tmp_path, capsys):
    # digits keeps 450 test images (a quarter of 1,797, stratified); data.max_test caps them
    params_raw["mechanism"]["test_images"] = 451
    params, stamp = _write(tmp_path / "params.yaml", params_raw), tmp_path / "ok.txt"
    assert main(["--params-file", str(params), "--stamp", str(stamp)]) == 2
    err = capsys.readouterr().err
    assert ("mechanism.test_images = 451 is more than the 450 test images the prepare stage "
            "keeps of digits: set it to at most 450, or null for all of them") in err
    assert not stamp.exists()
    params_raw["mechanism"]["test_images"] = 450
    assert main(["--params-file", str(_write(params, params_raw)), "--stamp", str(stamp)]) == 0
    params_raw["data"]["max_test"] = 300
    assert main(["--params-file", str(_write(params, params_raw)), "--stamp", str(stamp)]) == 2
    assert "more than the 300 test images" in capsys.readouterr().err


def test_the_test_images_counted_before_the_prepare_stage_are_the_ones_it_keeps(
        params_raw, digits):
    from gap_study.data.sizes import test_images
    from gap_study.pipeline.params import DataParams

    data = DataParams.model_validate({**params_raw["data"], "digits_size": 16})
    assert test_images(data) == len(digits.y_test)  # the conftest's 0.25 of digits, seed 0
    other = data.model_copy(update={"test_fraction": 0.3, "split_seed": 3, "max_test": 400})
    prepared = data_set(canvas=other.canvas_size, test_fraction=0.3, split_seed=3,
                        max_test=400)
    assert test_images(other) == len(prepared.y_test) == 400
    assert test_images(other.model_copy(update={"max_test": None})) == 540


def test_every_data_set_has_a_known_test_split_size():
    from gap_study.data.sizes import OFFICIAL_TEST_IMAGES
    from gap_study.pipeline.params import DATA_SETS, STUDY_SPLIT

    # a data set added without one would stop the check stage with a KeyError
    assert set(OFFICIAL_TEST_IMAGES) | set(STUDY_SPLIT) == set(DATA_SETS)
    assert not set(OFFICIAL_TEST_IMAGES) & set(STUDY_SPLIT)
