"""What ``parse_params`` says about a pydantic validation error of ``params.yaml``: one line
per problem, naming the dotted key, the bad value and what is allowed, with "did you mean" for
a misspelt key or choice; the checks of single values that pydantic's types lack; and the
mechanism section's checks against the others."""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from gap_study.nets.architecture import total_stride

if TYPE_CHECKING:
    from gap_study.pipeline.params import Params

__all__ = ["check_device", "check_mechanism", "check_scheduler", "describe", "suggest",
           "unique"]


def suggest(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(error: dict[str, Any], section_model: type[BaseModel]) -> str:
    """One line for one pydantic error: the dotted key, the bad value, what is allowed."""
    loc = [str(part) for part in error["loc"]]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        owner: Any = section_model
        for part in loc[:-1]:
            owner = owner.model_fields[part].annotation if hasattr(owner, "model_fields") else None
        allowed = sorted(owner.model_fields) if hasattr(owner, "model_fields") else []
        return (f"{key}: unknown key{suggest(loc[-1], allowed)}; "
                f"allowed keys here: {', '.join(allowed)}")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error":
        allowed = re.findall(r"'([^']+)'", message)
        return f"{key} = {value!r}: not allowed{suggest(str(value), allowed)}; {message}"
    if not error["loc"]:
        return message
    if not isinstance(value, dict):
        return f"{key} = {value!r}: {message}"
    return f"{key}: {message}"


def unique(values: list) -> list:
    duplicates = sorted({v for v in values if values.count(v) > 1}, key=str)
    if duplicates:
        raise ValueError(f"values must be unique; repeated: {duplicates}")
    return values


def check_scheduler(value: str) -> str:
    if value in ("local", "synchronous"):
        return value
    if re.fullmatch(r"(tcp|tls|ws|wss|ucx)://[^\s/:]+(:\d+)?|[^\s/:]+:\d+", value):
        return value
    raise ValueError("must be 'local' (a Dask cluster of this machine's cores), 'synchronous' "
                     "(in the stage's own process) or the address of a running Dask scheduler, "
                     f"e.g. 'tcp://10.0.0.5:8786'{suggest(value, ['local', 'synchronous'])}")


def check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")
    return value


def check_mechanism(params: Params) -> None:
    """The shift-trained cell moves objects within the canvas and is not the centred one;
    adaptive polyphase sampling halves only maps of even side."""
    data, shift = params.data, params.mechanism.train_shift
    if shift is not None:
        data.check_room("mechanism.train_shift", shift)
    if shift is not None and shift == params.train.base_shift:
        raise ValueError(
            f"mechanism.train_shift = {shift} is the training shift of the main runs "
            f"(the smallest of train.shift), whose cell the experiment has already: set "
            f"it above {shift}, or null for no shift-trained cell")
    mechanism, model = params.mechanism, params.model
    if shift is None and (mechanism.downsample, mechanism.padding) == (
            [model.downsample], [model.padding]):
        raise ValueError(
            f"mechanism.downsample = {mechanism.downsample} and mechanism.padding = "
            f"{mechanism.padding} are the model section's own backbone, and "
            "mechanism.train_shift is null: the mechanism experiment would train no run of "
            "its own to compare with the main runs. Fix: add a downsampling or a padding "
            "to those lists, or set mechanism.train_shift")
    stride = total_stride(params.model.widths)
    uses = [key for key, used in (("model.downsample", params.model.downsample == "aps"),
                                  ("mechanism.downsample", "aps" in params.mechanism.downsample))
            if used]
    if uses and data.canvas_size % stride:
        raise ValueError(
            f"aps (in {' and '.join(uses)}) halves only maps of even side: "
            f"data.canvas.{data.name} = {data.canvas_size} must be a multiple of the total "
            f"stride {stride} of model.widths' {len(params.model.widths)} blocks")
