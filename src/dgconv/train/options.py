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
from .config import EXCLUSIVE, GROUPS, LEGACY, TrainConfig, check_type

__all__ = ["add_arguments", "parse_flags", "to_flags", "read_config_file", "flag_of", "FILE_ONLY", "MAX_CONFIG_BYTES",
           "merge_given"]

#: Keys of a run's config.json that describe where that run lived, not what it computes: dropped when the file is
#: replayed through --config (the new run gets its own directory).
FILE_ONLY = ("out", "resume")


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag that moves a field off its default: ``--name``, or ``--no-name`` for a switch that is on
    by default (every switch takes both spellings)."""
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
    declared = [t.strip() for t in str(field.type).split("|")]
    first = next(t for t in declared if t != "None")
    base = meta.get("type") or (float if first.startswith("list[") else _SCALARS.get(first, str))
    if "None" not in declared:
        return base

    def value_or_none(text: str) -> Any:  # `--groups none` clears what a config file set
        return None if text.lower() == "none" else base(text)

    value_or_none.__name__ = getattr(base, "__name__", "value")  # argparse names the type in its errors
    return value_or_none


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`TrainConfig` field to ``parser``, in the groups of :data:`~dgconv.train.config.GROUPS`
    (values absent from the command line stay absent: ``argument_default=SUPPRESS`` is expected)."""
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups[meta["group"]]
        if str(f.type) == "bool":  # --x and --no-x both, so a flag can undo a config file's value
            name = f.name.replace("_", "-")
            group.add_argument(f"--{name}", dest=f.name, action=argparse.BooleanOptionalAction, help=meta["help"])
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


def merge_given(file_values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """The options of a run from a config file and the flags given beside it: every flag overrides the file, also
    where the file set the other option of a pair that excludes it (:data:`~dgconv.train.config.EXCLUSIVE`: a file's
    ``target`` gives way to ``--budget``, its ``groups`` to ``--groups-from``), and ``--mean none`` clears a list."""
    flags = {k: (None if isinstance(v, list) and v == [None] else v) for k, v in flags.items()}
    values = dict(file_values)
    for a, b in EXCLUSIVE:
        for mine, other in ((a, b), (b, a)):
            if mine in flags and other in values and other not in flags:
                del values[other]
    return {**values, **flags}


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


#: The largest config file read (bytes): a real one is a few kilobytes.
MAX_CONFIG_BYTES = 1 << 20
_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The option values in a config file (YAML, TOML or JSON, see the module docstring), type-checked. A run's
    ``config.json`` gives the options that run was started with, less :data:`FILE_ONLY` (and is refused, with the
    reason, when the run was resumed with another schedule: its ``config.json`` alone would train another run).

    The file is checked before it is read: its suffix, that it is a regular file (never a FIFO, a device or a
    folder) and at most :data:`MAX_CONFIG_BYTES`. YAML is read by YAML 1.2's rules for booleans and numbers
    (``on``/``no`` are strings, ``5e-4`` is a number); a key given twice, or under two spellings
    (``limit-train`` and ``limit_train``), is an error; the string ``none`` (TOML has no null) clears a value."""
    p = Path(path).expanduser()
    text = _read_bounded(p, str(path))
    doc = _parse(p, text)
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict) and ("format" in doc or "environment" in doc):
        _check_replayable(p, doc)
        doc = {**LEGACY, **{k: v for k, v in doc["config"].items() if k not in FILE_ONLY and k != "config"}}  # a run's
        doc = _moved_inputs(p, doc)
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping of option names to values, got {type(doc).__name__}")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name in values:
            raise ConfigError(f"{p}: option {name!r} is given twice (as {key!r} and another spelling)")
        if isinstance(value, str) and value.lower() in ("none", "null") and _optional(name):
            value = None
        check_type(name, value, str(p))
        values[name] = value
    return values


def _optional(name: str) -> bool:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    return name in fields and "None" in str(fields[name].type)


def _read_bounded(p: Path, given: str) -> str:
    import os
    import stat

    if p.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"--config {given}: use a .yaml, .yml, .toml or .json file")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError(f"--config {given}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--config {given}: cannot read it ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"--config {given}: not a regular file (a folder, a FIFO or a device); give a config file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {given}: {st.st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"--config {given}: more than {MAX_CONFIG_BYTES:,} bytes; not a config file")
        return data.decode()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {given}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


#: A run's options that name a file it read (a sweep's group spec, a source run's groups.json, a latency table).
_INPUTS = ("groups_from", "structure_from", "latency_table")


def _moved_inputs(config: Path, values: dict[str, Any]) -> dict[str, Any]:
    """A run's input files where they are now: a sweep committed elsewhere (another clone) keeps its files beside its
    runs, so a path that no longer exists is looked up by its last parts under the run's sweep directory."""
    out = dict(values)
    for key in _INPUTS:
        path = out.get(key)
        if not isinstance(path, str) or Path(path).exists():
            continue
        parts = Path(path).parts
        for base in (config.parent.parent, config.parent):
            found = next((base.joinpath(*parts[-n:]) for n in (1, 2) if len(parts) >= n
                          and base.joinpath(*parts[-n:]).exists()), None)
            if found is not None:
                out[key] = str(found)
                break
    return out


def _check_replayable(p: Path, doc: dict[str, Any]) -> None:
    """A run resumed with another number of epochs trained under two schedules; its config.json holds the last."""
    for entry in doc.get("history") or []:
        if isinstance(entry, dict) and isinstance(entry.get("epochs"), list) and len(entry["epochs"]) == 2:
            before, after = entry["epochs"]
            raise ConfigError(
                f"{p} cannot repeat its run: the run was resumed at epoch {entry.get('from_epoch')} with --epochs "
                f"{after} (it began with {before}), so its learning-rate schedule changed mid-run. To repeat it: "
                f"train with this file and --epochs {before}, then --resume that run with --epochs {after}"
            )


def _parse(p: Path, text: str) -> Any:
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingExtraError(f"--config {p}: YAML needs PyYAML (pip install 'dgconv[train]' or pyyaml); "
                                        f"TOML and JSON files need nothing") from None
            return yaml.load(text, Loader=_yaml_loader(yaml)) if text.strip() else {}
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_keys)
    except MissingExtraError:
        raise
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    except Exception as e:  # noqa: BLE001 - each parser has its own error class; all mean "not valid"
        raise ConfigError(f"{p} is not valid {suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    raise ConfigError(f"--config {p}: use a .yaml, .yml, .toml or .json file")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(f"key {dupes[0]!r} is given twice")
    return dict(pairs)


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's safe loader with YAML 1.2's booleans (``true``/``false`` only: ``on``, ``no`` stay strings) and
    numbers (``5e-4`` is a float), refusing duplicate keys."""
    import re

    class Loader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:bool",
                                                                                   "tag:yaml.org,2002:float")]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dupes:
            raise ConfigError(f"key {dupes[0]!r} is given twice")
        return {k: loader.construct_object(v, deep=deep) for k, (_, v) in zip(keys, node.value)}

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    return Loader
