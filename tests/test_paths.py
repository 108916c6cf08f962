import json

import pytest

from gap_study.nets.checkpoints import CheckpointError, read_checkpoint, record_key
from gap_study.pipeline.paths import Layout, RunId


@pytest.mark.parametrize("run", [RunId(0.1, 0, 0), RunId(1.0, 4, 12), RunId(0.25, 2, 3)])
def test_run_names_round_trip_through_file_names(run):
    assert RunId.from_stem(run.stem) == run


def test_run_names_read_like_their_params():
    assert RunId(1.0, 0, 2).stem == "fraction_1-shift_0-seed_2"
    assert RunId(0.3, 4, 0).stem == "fraction_0.3-shift_4-seed_0"
    assert RunId.from_stem("seed_0") is None


def test_checkpoints_are_listed_by_fraction_shift_and_seed_and_others_ignored(tmp_path):
    layout = Layout(tmp_path)
    runs = [RunId(1.0, 4, 0), RunId(0.1, 0, 1), RunId(1.0, 0, 0), RunId(0.1, 0, 0)]
    for run in runs:
        path = layout.checkpoint("gap", run)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (layout.models("gap") / "notes.pt").write_bytes(b"")
    assert [run for run, _ in layout.checkpoints("gap")] == sorted(runs)


def test_a_recorded_checkpoint_missing_from_its_folder_is_listed_and_refused_when_read(
        tmp_path):
    for name in ("dvc.yaml", "params.yaml"):  # a project root
        (tmp_path / name).write_text("{}\n")
    layout = Layout(tmp_path)
    kept, lost = RunId(1.0, 0, 0), RunId(1.0, 0, 1)
    for run in (kept, lost):
        layout.checkpoint("gap", run).parent.mkdir(parents=True, exist_ok=True)
        layout.checkpoint("gap", run).write_bytes(b"")
    layout.train_run.parent.mkdir(parents=True)
    layout.train_run.write_text(json.dumps({"checkpoints": {
        record_key(layout.checkpoint(head, run), tmp_path): "0" * 64
        for head in ("gap", "gmp") for run in (kept, lost)}}))
    layout.checkpoint("gap", lost).unlink()
    listed = layout.checkpoints("gap")
    assert listed == [(kept, layout.checkpoint("gap", kept)),
                      (lost, layout.checkpoint("gap", lost))]  # gmp's records are not gap's
    with pytest.raises(CheckpointError, match=r"models/gap/fraction_1-shift_0-seed_1\.pt does "
                                              r"not exist"):
        read_checkpoint(listed[1][1], layout.train_run)


def test_no_checkpoints_says_which_stage_makes_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoints in .*gmp: run the training "
                                                r"stage first \(`dvc repro train`\)"):
        Layout(tmp_path).checkpoints("gmp")


def test_a_head_the_train_stage_did_not_train_is_told_to_join_heads(tmp_path):
    # e.g. the evaluate notebook run by hand with `-p heads "[gmp]"` on a study of dense, gap
    for name in ("dvc.yaml", "params.yaml"):  # a project root
        (tmp_path / name).write_text("{}\n")
    layout = Layout(tmp_path)
    layout.train_run.parent.mkdir(parents=True)
    layout.train_run.write_text(json.dumps({"checkpoints": {
        record_key(layout.checkpoint(head, RunId(1.0, 0, 0)), tmp_path): "0" * 64
        for head in ("gap", "dense")}}))
    with pytest.raises(FileNotFoundError, match=r"no checkpoints in .*gmp: the train stage "
                                                r"trained dense, gap \(reports/train/run\.json\), "
                                                r"not gmp: add gmp to `heads` in params\.yaml"):
        layout.checkpoints("gmp")


def test_runs_keep_per_head_files_and_each_stage_one_record(tmp_path):
    layout, run = Layout(tmp_path), RunId(0.5, 2, 1)
    reports, stem = tmp_path / "reports", "fraction_0.5-shift_2-seed_1"
    assert layout.history("gsp", run) == reports / f"train/history/gsp/{stem}.csv"
    assert layout.checkpoint("gsp", run) == tmp_path / f"models/gsp/{stem}.pt"
    assert layout.eval_metrics("gsp") == reports / "eval/gsp/metrics.csv"
    assert (layout.train_run, layout.eval_run) == (reports / "train/run.json",
                                                   reports / "eval/run.json")
