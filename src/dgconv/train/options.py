"""The options of ``dgconv train``, built from :class:`~dgconv.train.config.TrainConfig` (where each one is declared
once: type, default, help, choices, group) and read from three places: flags, config files and run directories.

* :func:`add_arguments` builds the argparse groups (like timm's ``train.py``): a ``bool`` field defaulting to False
  is a ``--flag``, one defaulting to True a ``--no-flag``; every other field takes a value of its type. Flags only
  parse; :meth:`TrainConfig.resolved` validates.
* :func:`read_config_file` reads ``--config FILE``: YAML (``.yaml``/``.yml``, needs PyYAML), TOML (``.toml``) or JSON
  (``.json``, a run's own ``config.json`` included, to repeat that run). Its values are defaults that flags
  override; an unknown key or a value of the wrong type is an error naming the key and the file.
* :func:`parse_flags` turns ``dgconv train`` flags into typed values (what sweeps use for a protocol's extra
  options), :func:`to_flags` the other way (for the command a sweep logs).

Example::

    >>> parse_flags(["--budget", "32", "--cost", "macs", "--no-enforce-budget"])
    {'budget': 32.0, 'cost': 'macs', 'enforce_budget': False}
    >>> to_flags({"budget": 32.0, "enforce_budget": False, "mean": [0.5]})
    ['--budget', '32', '--no-enforce-budget', '--mean', '0.5']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError
from .config import GROUPS, TrainConfig, check_type

__all__ = ["add_arguments", "parse_flags", "to_flags", "read_config_file", "flag_of", "FILE_ONLY"]

#: Keys of a run's config.json that describe where that run lived, not what it computes: dropped when the file is
#: replayed through --config (the new run gets its own directory).
FILE_ONLY = ("out", "resume")


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a field: ``--name``, or ``--no-name`` for a switch that is on by default."""
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def _budget(text: str) -> float | str | None:
    """``--budget``: a number, ``default`` or ``none`` (validated later, in ``resolved()``)."""
    if text.lower() in ("none", "default"):
        return None if text.lower() == "none" else "default"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, 'default' or 'none', got {text!r}") from None


_PARSERS = {"budget": _budget}
_SCALARS = {"int": int, "float": float, "str": str}


def _value_type(field: dataclasses.Field) -> Any:
    meta = field.metadata
    if "parse" in meta:
        return _PARSERS[meta["parse"]]
    if "type" in meta:
        return meta["type"]
    declared = [t.strip() for t in str(field.type).split("|") if t.strip() != "None"]
    first = declared[0]
    return float if first.startswith("list[") else _SCALARS.get(first, str)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`TrainConfig` field to ``parser``, in the groups of :data:`~dgconv.train.config.GROUPS`
    (values absent from the command line stay absent: ``argument_default=SUPPRESS`` is expected)."""
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups[meta["group"]]
        if str(f.type) == "bool":
            group.add_argument(flag_of(f), dest=f.name, action="store_false" if f.default else "store_true",
                               help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "type": _value_type(f), "help": meta["help"]}
        for key in ("choices", "metavar", "nargs"):
            if key in meta:
                kwargs[key] = meta[key]
        group.add_argument(flag_of(f), **kwargs)


def parse_flags(flags: Sequence[str]) -> dict[str, Any]:
    """The typed values of ``dgconv train`` flags (only those given). Raises :class:`ConfigError` for a flag that
    is not an option."""
    parser = _Strict(add_help=False, argument_default=argparse.SUPPRESS)
    add_arguments(parser)
    return vars(parser.parse_args(list(flags)))


class _Strict(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"dgconv train options: {message}")


def to_flags(values: dict[str, Any]) -> list[str]:
    """``dgconv train`` flags that give ``values`` (the inverse of :func:`parse_flags`)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: list[str] = []
    for name, value in values.items():
        f = fields[name]
        if str(f.type) == "bool":
            if value != f.default:
                out.append(flag_of(f))
            continue
        if value is None:
            value = "none" if f.metadata.get("parse") == "budget" else None
            if value is None:
                continue
        items = value if isinstance(value, list) else [value]
        out += [flag_of(f), *(_text(v) for v in items)]
    return out


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option values in a config file (YAML, TOML or JSON, see the module docstring), type-checked. A run's
    ``config.json`` gives the options that run was started with, less :data:`FILE_ONLY`."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    doc = _parse(p, text)
    if isinstance(doc, dict) and doc.get("format") == "dgconv.run/1" and isinstance(doc.get("config"), dict):
        doc = {k: v for k, v in doc["config"].items() if k not in FILE_ONLY}  # a run's own config.json
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping of option names to values, got {type(doc).__name__}")
    values = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        check_type(name, value, str(p))
        values[name] = value
    return values


def _parse(p: Path, text: str) -> Any:
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingExtraError(f"--config {p}: YAML needs PyYAML (pip install 'dgconv[train]' or pyyaml); "
                                        f"TOML and JSON files need nothing") from None
            return yaml.safe_load(text) if text.strip() else {}
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
    except MissingExtraError:
        raise
    except Exception as e:  # noqa: BLE001 - each parser has its own error class; all mean "not valid"
        raise ConfigError(f"{p} is not valid {suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    raise ConfigError(f"--config {p}: use a .yaml, .yml, .toml or .json file")
