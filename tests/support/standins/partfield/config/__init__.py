"""TEST STAND-IN for PartField's ``partfield/config/__init__.py``: computes nothing real.

Upstream: ``default_argument_parser()`` (``--config-file/-c`` and ``--opts``) and ``setup(args, freeze=True)``,
which clones the yacs defaults (``partfield/config/defaults.py``), merges the YAML file ``args.config_file``
(``configs/final/demo.yaml``) and the ``args.opts`` key/value list, and returns the config. yacs is not installed
here, so ``CfgNode`` below is a minimal dict with attribute access, enough for what the adapter reads.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import yaml
from standin_calls import record


class CfgNode(dict):
    """The part of yacs' CfgNode the adapter uses: attribute access, clone, merge a file or a key/value list."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def clone(self) -> CfgNode:
        return copy.deepcopy(self)

    def merge_from_file(self, path: str) -> None:
        with open(path) as f:
            _merge(self, yaml.safe_load(f) or {})

    def merge_from_list(self, opts: list[Any] | None) -> None:
        opts = list(opts or [])
        if len(opts) % 2:
            raise ValueError(f"--opts needs key/value pairs, got {opts}")
        for key, value in zip(opts[0::2], opts[1::2], strict=True):
            node = self
            *path, last = str(key).split(".")
            for part in path:
                node = node[part]
            if last not in node:
                raise KeyError(f"Non-existent config key: {key}")
            node[last] = value if not isinstance(value, str) else _literal(value)


def _literal(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _merge(node: CfgNode, data: dict) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            child = node.setdefault(key, CfgNode())
            if not isinstance(child, CfgNode):
                child = node[key] = CfgNode(child)
            _merge(child, value)
        else:
            node[key] = value


def default_argument_parser(add_help: bool = True, default_config_file: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=add_help)
    parser.add_argument("--config-file", "-c", default=default_config_file, metavar="FILE")
    parser.add_argument("--opts", default=None, nargs=argparse.REMAINDER)
    return parser


def setup(args: argparse.Namespace, freeze: bool = True) -> CfgNode:
    from .defaults import _C

    cfg = _C.clone()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    record("partfield.config.setup", config_file=args.config_file, opts=args.opts, freeze=freeze)
    return cfg
