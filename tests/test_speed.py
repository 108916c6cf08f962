"""The speed stage's measurement: heads timed in turns, one row per head and round."""

import torch
from builders import TINY_MODEL, tiny_config

from gap_study.pipeline.params import SpeedParams, TrainParams
from gap_study.stages import speed
from gap_study.stages.speed import (
    alternate,
    interleaved_step_times,
    measure_step_times,
    training_step,
)


def test_heads_take_turns_and_the_order_reverses_every_other_round():
    assert [alternate(["a", "b", "c"], r) for r in range(3)] == [
        ["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    times = interleaved_step_times(steps, rounds=3, blocks=2, steps_per_block=3, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up, one step each
    assert calls[2:] == ["a"] * 6 + ["b"] * 6 + ["b"] * 6 + ["a"] * 6 + ["a"] * 6 + ["b"] * 6
    assert times[["head", "round"]].values.tolist() == [
        ["a", 0], ["b", 0], ["b", 1], ["a", 1], ["a", 2], ["b", 2]]
    assert (times["seconds_per_step"] >= 0).all()


def test_a_training_step_updates_the_weights_on_each_call(small):
    step = training_step(tiny_config("gap"), small, batch_size=32, lr=0.01, seed=0,
                         device=torch.device("cpu"), schedule="constant", weight_decay=0.0)
    weights = [step.model.head.fc.weight.detach().clone()]
    for _ in range(2):
        step()
        weights.append(step.model.head.fc.weight.detach().clone())
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert step.model.training
    decayed = training_step(tiny_config("gap"), small, batch_size=32, lr=0.01, seed=0,
                            device=torch.device("cpu"), schedule="constant",
                            weight_decay=0.01)
    assert [g["weight_decay"] for g in decayed.optimizer.param_groups] == [0.01]


def test_the_stage_times_every_head_with_the_runs_thread_count_then_restores_ours(
        small, monkeypatch, request):
    seen = []

    def spy(steps, **kwargs):
        seen.append((list(steps), torch.get_num_threads()))
        return interleaved_step_times(steps, **kwargs)

    monkeypatch.setattr(speed, "interleaved_step_times", spy)
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))  # the worker's, for later tests
    torch.set_num_threads(2)
    model = TINY_MODEL
    train = TrainParams(seeds=[0], epochs=1, batch_size=32, schedule="cosine", drop_last=True,
                        weight_decay=0.0, validation_batch_size=512, fractions=[1.0], shift=[0])
    times = measure_step_times(["dense", "gap"], model, small, train,
                               SpeedParams(rounds=2, blocks=1, steps=1, warmup=0), lr=0.01,
                               threads=1,
                               device=torch.device("cpu"))
    assert seen == [(["dense", "gap"], 1)] and torch.get_num_threads() == 2
    # the study's weight decay: it adds a term to every update, so it is timed too
    made = []
    monkeypatch.setattr(speed, "training_step",
                        lambda *args, **kwargs: made.append(kwargs) or (lambda: None))
    measure_step_times(["gap"], model, small, train.model_copy(update={"weight_decay": 0.01}),
                       SpeedParams(rounds=2, blocks=1, steps=1, warmup=0), lr=0.01, threads=1,
                       device=torch.device("cpu"))
    assert [kwargs["weight_decay"] for kwargs in made] == [0.01]
    assert times[["head", "round"]].values.tolist() == [
        ["dense", 0], ["gap", 0], ["gap", 1], ["dense", 1]]
