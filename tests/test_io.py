"""Writing outputs: a full disk is reported as such, with the file, and leaves nothing behind."""

import errno
from pathlib import Path

import pandas as pd
import pytest

from gap_study.pipeline.io import DiskFullError, write_csv, write_json, write_text


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_says_disk_full_naming_the_file_and_keeps_the_old_output(tmp_path,
                                                                           monkeypatch):
    path = tmp_path / "reports" / "run.json"
    write_json(path, {"old": 1})
    monkeypatch.setattr(Path, "write_text", _no_space)
    with pytest.raises(DiskFullError, match=r"disk full: could not write .*reports/run\.json "
                       r"\(.* free in .*No space left on device\)") as caught:
        write_json(path, {"new": 2})
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_text() == '{\n  "old": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left


def test_torchs_short_write_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    def short_write(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 99072 "
                           "vs 98968")

    monkeypatch.setattr(pd.DataFrame, "to_csv", short_write)
    with pytest.raises(DiskFullError, match=r"disk full: could not write .*a\.csv.*unexpected "
                       r"pos 99072"):
        write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [1]}))


@pytest.mark.parametrize(("code", "full"), [(errno.ENOSPC, True), (errno.EFBIG, False)])
def test_torchs_short_write_is_a_full_disk_only_when_its_write_error_says_so(
        tmp_path, monkeypatch, code, full):
    # torch.save raises its short write while handling the file object's OSError: a file
    # size limit (EFBIG, `ulimit -f`) is not a full disk, and must not read as one
    def short_write(*_args, **_kwargs):
        try:
            raise OSError(code, "the write failed")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "704 vs 598") from None

    monkeypatch.setattr(pd.DataFrame, "to_csv", short_write)
    with pytest.raises((RuntimeError, OSError)) as caught:
        write_csv(tmp_path / "a.csv", pd.DataFrame({"x": [1]}))
    assert isinstance(caught.value, DiskFullError) == full


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch):
    def denied(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_text", denied)
    with pytest.raises(PermissionError) as caught:
        write_text(tmp_path / "a.txt", "x")
    assert not isinstance(caught.value, DiskFullError)
