"""gap_study.sweep on hand-made frames and params: which runs of which experiments pool."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
import yaml

from gap_study import sweep as sw


@pytest.fixture
def params(params_raw) -> dict:
    # the tests set train.epochs to 3 to make experiments differ: pin the base to 10, so that
    # the user's params.yaml (after `dvc exp run -S train.epochs=3`, say) cannot make them equal
    params = copy.deepcopy(params_raw)
    params["train"]["epochs"] = 10
    return params


def _with(params: dict, **changes) -> dict:
    """A copy of ``params`` with dotted keys changed: ``_with(p, **{"train.epochs": 3})``."""
    params = copy.deepcopy(params)
    for key, value in changes.items():
        *sections, last = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[last] = value
    return params


def _results(seeds, heads=("gap",), variants=((0.5, 0), (1.0, 0), (1.0, 2)),
             accuracy: float = 0.9) -> pd.DataFrame:
    """A ``reports/results.csv``-like frame: one row per head x variant x seed."""
    rows = [{"head": head, "fraction": fraction, "train_shift": shift, "seed": seed,
             "test_accuracy": accuracy + 0.01 * seed, "seconds_per_epoch": 1.0}
            for head in heads for fraction, shift in variants for seed in seeds]
    return pd.DataFrame(rows)


def _choices(at_chance: dict[str, bool]) -> pd.DataFrame:
    """A ``reports/tune/choices.csv``-like frame: each head's ``at_chance``."""
    return pd.DataFrame({"head": list(at_chance), "lr": 0.003,
                         "at_chance": list(at_chance.values())})


def _experiment(name: str, params: dict, seeds, untrained=(), **kwargs
                ) -> tuple[pd.DataFrame, tuple]:
    """An experiment's labelled runs and its ``settings_frame`` entry; ``untrained``: the
    heads its tune stage recorded as untrained (every other head trained), ``None``: none
    recorded."""
    results = _results(seeds, **kwargs)
    recorded = None if untrained is None else {
        head: head in untrained for head in results["head"].unique()}
    runs = sw.label_runs(results, experiment=name, rev=f"rev-{name}", params=params,
                         untrained=recorded)
    return runs, (name, f"rev-{name}", params)


def test_settings_leave_out_bookkeeping_params_and_other_canvases(params):
    settings = sw.run_settings(params)
    assert settings["train.epochs"] == params["train"]["epochs"]
    assert settings["model.widths"] == params["model"]["widths"]
    # the canvas of the chosen data set only
    assert settings["data.canvas"] == params["data"]["canvas"]["digits"]
    assert not any(k.startswith("data.canvas.") for k in settings)
    for key in ("train.seeds", "heads", "device", "data.root", "data.download",
                "evaluate.batch_size", "report.confidence"):
        assert key not in settings
    assert "train.fractions" in settings and "train.shift" in settings
    assert list(settings) == sorted(settings)
    assert params["data"]["canvas"]["mnist"] == 44  # the input is left alone


def test_every_ignored_param_exists_in_params_yaml(params):
    flat = sw._flatten(params)
    for name in sw.IGNORED_PARAMS:
        assert any(k == name or k.startswith(f"{name}.") for k in flat), name


def test_settings_id_is_stable_across_key_order_and_number_spelling(params):
    settings = sw.run_settings(params)
    reordered = dict(reversed(list(settings.items())))
    assert list(reordered) != list(settings)
    assert sw.settings_id(reordered) == sw.settings_id(settings)
    # nested key order of params.yaml does not matter either
    shuffled = {section: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                for section, v in reversed(list(params.items()))}
    assert sw.settings_id(sw.run_settings(shuffled)) == sw.settings_id(settings)
    fractions = [float(f) for f in params["train"]["fractions"]]
    as_ints = _with(params, **{"train.fractions": [int(f) if f == 1 else f for f in fractions]})
    assert sw.settings_id(sw.run_settings(as_ints)) == sw.settings_id(settings)
    # the first 8 hex digits of the SHA-256 of the compact, key-sorted JSON, pinned:
    # sha256(b'{"train.epochs":3}') starts 1198a77b
    assert sw.settings_id({"train.epochs": 3}) == "1198a77b"
    assert sw.settings_id({"train.epochs": 3.0}) == "1198a77b"  # canonical: 3.0 is 3


def test_bookkeeping_changes_keep_the_settings_and_real_changes_do_not(params):
    same = sw.settings_id(sw.run_settings(params))
    for key, value in [("train.seeds", [7]), ("heads", ["nin"]), ("device", "cpu"),
                       ("data.root", "/elsewhere"), ("data.download", False),
                       ("evaluate.batch_size", 512), ("report.confidence", 0.9),
                       ("data.canvas.mnist", 60)]:
        assert sw.settings_id(sw.run_settings(_with(params, **{key: value}))) == same, key
    for key, value in [("train.epochs", 3), ("tune.learning_rates", [0.01]),
                       ("data.max_train", 100),
                       ("model.widths", [8, 16]), ("data.name", "mnist"),
                       ("data.canvas.digits", 40), ("train.fractions", [1.0]),
                       ("evaluate.max_shift", 4)]:
        assert sw.settings_id(sw.run_settings(_with(params, **{key: value}))) != same, key


def test_experiments_differing_only_in_seeds_pool_into_one_group(params):
    a, a_params = _experiment("seed0", _with(params, **{"train.seeds": [0]}), [0])
    b, b_params = _experiment("seed1", _with(params, **{"train.seeds": [1]}), [1])
    runs = sw.pool_runs([a, b])
    assert runs["settings"].nunique() == 1 and len(runs) == 6
    assert list(runs.columns[:4]) == ["experiment", "rev", "data", "settings"]
    summary = sw.sweep_summary(runs)
    assert len(summary) == 3 * 2  # 3 variants x 2 metrics, each over both seeds
    assert (summary["n"] == 2).all()
    text = sw.sweep_table(runs, settings=sw.settings_frame([a_params, b_params]))
    assert "## digits (2 seeds)" in text and text.count("\n## ") == 1
    assert "(experiments seed0, seed1)." in text


def test_experiments_differing_in_epochs_do_not_pool(params):
    a, a_params = _experiment("short", _with(params, **{"train.epochs": 3}), [0, 1])
    b, b_params = _experiment("long", params, [0, 1], accuracy=0.5)
    runs = sw.pool_runs([a, b])
    assert runs["settings"].nunique() == 2 and len(runs) == 12  # nothing deduplicated
    summary = sw.sweep_summary(runs)
    assert (summary["n"] == 2).all() and summary["settings"].nunique() == 2
    accuracy = summary[summary.metric == "test_accuracy"].groupby("settings")["mean"].mean()
    assert sorted(accuracy.round(3)) == [0.505, 0.905]  # never averaged across settings

    settings = sw.settings_frame([a_params, b_params])
    differences = sw.settings_differences(settings)
    assert list(differences.columns) == ["data", "settings", "experiments", "train.epochs"]
    assert differences["train.epochs"].tolist() == ["3", str(params["train"]["epochs"])]

    text = sw.sweep_table(runs, settings=settings)
    short, long = (sw.settings_id(sw.run_settings(p[2])) for p in (a_params, b_params))
    assert f"## digits, settings {long} (2 seeds)" in text
    assert f"## digits, settings {short} (2 seeds)" in text
    assert f"Settings `{short}` (experiments short): `train.epochs` = 3." in text
    assert "## digits (2 seeds)" not in text


def test_a_run_found_twice_with_the_same_settings_counts_once(params):
    # "b-rerun" repeats seed 1 of "a-first" with the same settings, and adds seed 2
    second, _ = _experiment("b-rerun", _with(params, **{"train.seeds": [1, 2]}), [1, 2])
    first, _ = _experiment("a-first", _with(params, **{"train.seeds": [0, 1]}), [0, 1])
    second.loc[second.seed == 1, "seconds_per_epoch"] = 5.0  # only timings can differ
    for frames in ([first, second], [second, first]):
        runs = sw.pool_runs(frames)
        assert len(runs) == 3 * 3 and sorted(runs.seed.unique()) == [0, 1, 2]
        assert not runs.duplicated(["settings", "head", "fraction", "train_shift",
                                    "seed"]).any()
        # the copy kept is the first experiment's by name, whatever the listing order
        assert (runs.loc[runs.seed == 1, "experiment"] == "a-first").all()
        assert (runs["seconds_per_epoch"] == 1.0).all()
    assert (sw.sweep_summary(runs)["n"] == 3).all()


def test_the_same_run_under_other_settings_is_kept_twice(params):
    a, _ = _experiment("a", params, [0])
    b, _ = _experiment("b", _with(params, **{"train.lr": 0.01}), [0])
    runs = sw.pool_runs([a, b])
    assert len(runs) == 6 and runs.groupby("settings").size().tolist() == [3, 3]


def _with_mechanism(results: pd.DataFrame, seeds) -> pd.DataFrame:
    """``results`` as the report writes it: part ``main`` on the default backbone, plus the
    mechanism's runs of ``gap`` in two cells (the main cell again, scored on fewer images)."""
    main = results.assign(part="main", downsample="max", padding="zeros")
    mechanism = pd.DataFrame([
        {"part": "mechanism", "downsample": downsample, "padding": "zeros", "head": "gap",
         "fraction": 1.0, "train_shift": 0, "seed": seed, "test_accuracy": 0.5}
        for downsample in ("max", "blurmax") for seed in seeds])
    return pd.concat([main, mechanism], ignore_index=True)


def test_mechanism_runs_pool_apart_from_main_runs_with_the_same_keys(params):
    frames = [sw.label_runs(_with_mechanism(_results(seeds), seeds), experiment=name,
                            rev=name, params=_with(params, **{"train.seeds": seeds}))
              for name, seeds in [("a", [0, 1]), ("b", [1, 2])]]
    runs = sw.pool_runs(frames)
    # seed 1 is in both experiments: counted once in each part and cell, never merged across
    assert len(runs) == 3 * 3 + 2 * 3
    summary = sw.sweep_summary(runs).query("metric == 'test_accuracy'")
    mechanism = summary[summary.part == "mechanism"]
    assert sorted(mechanism.downsample) == ["blurmax", "max"]
    assert (mechanism["mean"] == 0.5).all() and (mechanism["n"] == 3).all()
    main = summary[(summary.part == "main") & (summary.fraction == 1.0)
                   & (summary.train_shift == 0)]
    assert main["mean"].item() == pytest.approx(0.91)  # seeds 0, 1, 2: 0.90, 0.91, 0.92
    text = sw.sweep_table(runs)
    assert re.search(r"\| mechanism +\| blurmax +\| zeros +\| gap +\|", text)


def test_results_from_before_the_part_column_are_main_runs_of_their_backbone(params):
    runs = sw.label_runs(_results([0]), experiment="old", rev="old",
                         params=_with(params, **{"model.padding": "circular"}))
    assert (runs.part == "main").all() and (runs.padding == "circular").all()
    assert (runs.downsample == params["model"]["downsample"]).all()


def test_settings_differences_mark_missing_keys_and_ignore_the_data_name(params):
    mnist = _with(params, **{"data.name": "mnist"})
    extra = _with(params, **{"model.extra": 1})
    settings = sw.settings_frame([("d", "r1", params), ("m", "r2", mnist),
                                  ("x", "r3", extra)])
    differences = sw.settings_differences(settings)
    assert "data.name" not in differences.columns
    assert differences["data"].tolist() == ["digits", "mnist", "digits"]
    assert differences["model.extra"].tolist() == ["(unset)", "(unset)", "1"]
    digits_canvas = str(params["data"]["canvas"]["digits"])
    assert differences["data.canvas"].tolist() == [digits_canvas, "44", digits_canvas]


def test_main_writes_the_sweep_from_dvc_experiments(params, tmp_path, monkeypatch, capsys):
    experiments = {"rev0": ("seed0", [0]), "rev1": ("seed1", [1])}
    api = sw.dvc.api
    monkeypatch.setattr(api, "exp_show", lambda repo: [
        {"Experiment": None, "rev": "workspace"},
        *({"Experiment": name, "rev": rev, "State": "Success"}
          for rev, (name, _) in experiments.items()),
        {"Experiment": "broken", "rev": "rev9", "State": "Failed"}])
    monkeypatch.setattr(api, "params_show", lambda repo, rev: _with(
        params, **{"train.seeds": experiments[rev][1]}))
    monkeypatch.setattr(api, "read", lambda path, repo, rev: (
        _choices({"gap": False}) if path == sw.CHOICES else _results(experiments[rev][1])
    ).to_csv(index=False))
    assert sw.main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## digits (2 seeds)" in out and "Untrained" not in out and "record" not in out
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 6 and results["settings"].nunique() == 1
    assert results["untrained"].eq(False).all() and results["untrained_in"].isna().all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert "settings" in summary and (summary["n"] == 2).all()
    settings = pd.read_csv(tmp_path / "settings.csv")
    assert settings["experiment"].tolist() == ["seed0", "seed1"]
    assert (tmp_path / "sweep.md").read_text().startswith("# Sweep over DVC experiments")


@pytest.mark.parametrize(("flag", "level"), [([], "90%"), (["--confidence", "0.8"], "80%")])
def test_main_takes_the_confidence_from_the_projects_params_unless_given(
        params, tmp_path, monkeypatch, flag, level):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump(_with(params, **{"report.confidence": 0.9})))
    api = sw.dvc.api
    monkeypatch.setattr(api, "exp_show", lambda repo: [
        {"Experiment": "seed0", "rev": "rev0", "State": "Success"}])
    monkeypatch.setattr(api, "params_show", lambda repo, rev: params)
    monkeypatch.setattr(api, "read", lambda path, repo, rev: _results([0, 1]).to_csv(index=False))
    assert sw.main(["--repo", str(repo), "--out", str(tmp_path / "out"), *flag]) == 0
    assert f"[{level} Student-t interval]" in (tmp_path / "out" / "sweep.md").read_text()


def test_main_without_a_params_yaml_says_so_in_one_line(tmp_path, capsys):
    assert sw.main(["--repo", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'params.yaml'} not found: run from "
                                       "the project root, or pass the path of params.yaml\n")


def test_sections_keep_each_data_sets_settings_groups_together(params):
    # by experiment name the order is digits (a), mnist (b), digits (c)
    a, a_params = _experiment("a", params, [0])
    b, b_params = _experiment("b", _with(params, **{"data.name": "mnist"}), [0, 1])
    c, c_params = _experiment("c", _with(params, **{"train.epochs": 3}), [0])
    runs = sw.pool_runs([c, b, a])
    text = sw.sweep_table(runs, settings=sw.settings_frame([a_params, b_params, c_params]))
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    ids = [sw.settings_id(sw.run_settings(p[2])) for p in (a_params, c_params)]
    assert headings == [f"## digits, settings {ids[0]} (1 seed)",
                        f"## digits, settings {ids[1]} (1 seed)", "## mnist (2 seeds)"]
    assert f"`data.canvas` = 44, `train.epochs` = {params['train']['epochs']}." in text


def test_a_section_names_each_untrained_head_with_the_experiments_that_recorded_it(params):
    a, _ = _experiment("a", params, [0], untrained=["gap"], heads=("gap", "dense", "gmp"))
    b, _ = _experiment("b", params, [1], untrained=["gap", "gmp"], heads=("gap", "dense", "gmp"))
    runs = sw.pool_runs([b, a])
    assert runs.groupby("head")["untrained"].agg(set).to_dict() == {
        "gap": {True}, "gmp": {True}, "dense": {False}}
    assert set(runs.loc[runs["head"] == "gmp", "untrained_in"]) == {"b"}  # a's runs too
    text = " ".join(sw.sweep_table(runs).split())
    assert "**Untrained: `gap` (experiments a, b) and `gmp` (experiment b).** No learning rate " \
           "tried trained them there (`at_chance` in `reports/tune/choices.csv`): their rows " \
           "include runs at chance" in text
    assert "record" not in text
    trained, _ = _experiment("c", params, [2], heads=("gap", "dense"))
    text = sw.sweep_table(sw.pool_runs([trained]))
    assert "Untrained" not in text and "record" not in text


def test_a_run_kept_from_an_experiment_without_a_record_takes_its_settings_groups_flag(params):
    # the same run in both: kept from "a" (first by name), which records nothing; "b" says
    # its head did not train, and the pooled run says so
    a, _ = _experiment("a", params, [0], untrained=None)
    b, _ = _experiment("b", params, [0], untrained=["gap"])
    runs = sw.pool_runs([a, b])
    assert set(runs["experiment"]) == {"a"} and runs["untrained"].eq(True).all()
    assert "**Untrained: `gap` (experiment b).** No learning rate tried trained it there" \
           in " ".join(sw.sweep_table(runs).split())


def test_experiments_that_do_not_record_untrained_heads_are_named(params):
    a, _ = _experiment("a", params, [0], untrained=None)
    b, _ = _experiment("b", params, [1], untrained=None)
    runs = sw.pool_runs([a, b])
    assert runs["untrained"].isna().all()
    text = " ".join(sw.sweep_table(runs).split())
    assert "Experiments a, b do not record which heads trained (no `at_chance` in their " \
           "`reports/tune/choices.csv`): run them again to know." in text
    text = " ".join(sw.sweep_table(sw.pool_runs([a])).split())
    assert "Experiment a does not record which heads trained (no `at_chance` in its" in text
    # a head the experiment's choices lack is not recorded either
    lacking = sw.label_runs(_results([0], heads=("gap", "gmp")), experiment="c", rev="rev-c",
                            params=params, untrained={"gap": False})
    flags = lacking.drop_duplicates("head").set_index("head")["untrained"]
    assert flags.notna()["gap"] and not flags["gap"] and pd.isna(flags["gmp"])


def test_an_experiment_without_the_tune_stages_choices_records_no_untrained_heads(monkeypatch):
    files = {"new": _choices({"gap": True, "dense": False}).to_csv(index=False),
             "old": _choices({"gap": False}).drop(columns="at_chance").to_csv(index=False)}

    def read(path, repo, rev):
        assert path == sw.CHOICES
        if rev not in files:
            raise sw.PathMissingError(path, repo)
        return files[rev]
    monkeypatch.setattr(sw.dvc.api, "read", read)
    assert sw.recorded_untrained(".", "new") == {"gap": True, "dense": False}
    assert sw.recorded_untrained(".", "old") is None
    assert sw.recorded_untrained(".", "before-tuning") is None
