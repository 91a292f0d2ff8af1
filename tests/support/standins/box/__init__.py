"""TEST STAND-IN for python-box (PyPI ``python-box``, import name ``box``), which UniRig reads its configs with
(``run.py``: ``Box(yaml.safe_load(...))``) and which is not installed here: computes nothing real.

Only ``Box(mapping)``: a dict whose keys are also attributes, nested mappings turned into Boxes; a missing
attribute raises AttributeError (upstream's BoxKeyError is one).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Box"]


def _boxed(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Box):
        return Box(value)
    if isinstance(value, list):
        return [_boxed(v) for v in value]
    return value


class Box(dict):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _boxed(value))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value
