"""Every train option declared once (on TrainConfig) and read from flags, config files and run directories alike."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dgconv.errors import ConfigError
from dgconv.train.config import GROUPS, TrainConfig
from dgconv.train.options import flag_of, parse_flags, read_config_file, to_flags
from tests.helpers import cli, metrics, strip_time

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
READING = {"config", "print_config"}  # how options are read, not options of a run

#: A valid value other than the default for every option (the config-file test sets them all at once).
SAMPLE = {
    "model": "g_resnext_cifar_tiny", "budget": 16.0, "alpha": -0.05, "enforce_budget": False, "cost": "macs",
    "target": None, "latency_table": None, "trust_latency_table": False, "objective": "lagrangian", "dual_lr": 0.1,
    "min_group_width": 2, "max_groups": 16, "groups": None, "groups_from": None, "structure_from": None, "init_from": None, "gate_init": 0.5,
    "zero_init_residual": True, "freeze_groups_at": "0.5", "gate_batch_fraction": 0.5, "gate_every": 2, "orders": "gather",
    "dataset": "cifar10", "data_dir": "/data", "download": False, "image_size": 24, "resize": "stretch",
    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "hflip": "off", "crop_padding": 2, "crop_scale": 0.5, "limit_train": 512,
    "limit_test": 256, "workers": 1, "epochs": 4, "batch_size": 32, "lr": 0.05, "momentum": 0.8, "nesterov": True,
    "weight_decay": 5e-4, "schedule": "triangle", "warmup_epochs": 1.0, "label_smoothing": 0.1, "lookahead": 5,
    "lookahead_alpha": 0.25, "lookahead_ramp": True, "lookahead_buffers": True, "norm_bias_lr_scale": 64.0,
    "freeze_norm_scale": True, "tta": "flip", "seed": 3, "out": "runs/x", "resume": None,
    "device": "cpu", "amp": True, "channels_last": True, "compile": True, "deterministic": True, "tensorboard": True,
    "progress": False, "threads": 1,
}


def train_parser():
    from dgconv.cli import _subparser, build_parser

    return _subparser(build_parser(), "train")


def test_each_option_is_spelled_once_and_the_parser_is_built_from_the_config():
    assert set(SAMPLE) == set(FIELDS)  # the sample covers every option (a new field must be added to it)
    parser = train_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == set(FIELDS) | READING
    for name, f in FIELDS.items():
        assert f.metadata["group"] in GROUPS and f.metadata["help"], name
        flags = [o for a in parser._actions if a.dest == name for o in a.option_strings]
        if str(f.type) == "bool":  # a switch takes both spellings, so a flag can undo a config file's value
            assert sorted(flags) == sorted([f"--{name.replace('_', '-')}", f"--no-{name.replace('_', '-')}"]), name
            assert flag_of(f) in flags
        else:
            assert flags == [flag_of(f)], name
    titles = [g.title for g in parser._action_groups]
    assert all(t in titles for t in GROUPS.values())  # grouped like timm's train.py


def test_flags_and_values_round_trip():
    values = {k: v for k, v in SAMPLE.items() if v is not None and k != "budget"}
    assert parse_flags(to_flags(values)) == {k: v for k, v in values.items() if v != FIELDS[k].default}
    assert parse_flags(["--budget", "none"]) == {"budget": None}
    with pytest.raises(ConfigError, match="unrecognized arguments: --bugdet"):
        parse_flags(["--bugdet", "3"])


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_a_config_file_with_every_option_then_flags_override(tmp_path, suffix):
    values = dict(SAMPLE)
    path = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        # a YAML file may spell a key as its flag does (data-dir)
        path.write_text(yaml.safe_dump({k.replace("_", "-") if k == "data_dir" else k: v for k, v in values.items()}))
    elif suffix == ".toml":  # TOML has no null: leave those out
        lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
        path.write_text("\n".join(lines) + "\n")
        values = {k: v for k, v in values.items() if v is not None}
    else:
        path.write_text(json.dumps(values))
    assert read_config_file(path) == values
    r = cli("train", "--config", str(path), "--print-config", "--epochs", "7", "--seed", "9")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["epochs"] == 7 and shown["seed"] == 9  # flags override the file
    for k, v in values.items():
        if k not in ("epochs", "seed"):
            assert shown[k] == v, k


def test_bad_config_files_name_the_key_and_the_file(tmp_path):
    cases = {
        "unknown.json": ('{"epoch": 3}', "unknown option 'epoch' in {p}; did you mean 'epochs'?"),
        "type.json": ('{"epochs": "3"}', "option 'epochs' in {p} must be int | null, got '3' (str)"),
        "bool.json": ('{"amp": 1}', "option 'amp' in {p} must be bool, got 1 (int)"),
        "list.json": ('{"mean": [0.5, "x"]}', "option 'mean' in {p} must be list[float] | null"),
        "broken.json": ('{"epochs": ', "{p} is not valid JSON"),
        "list-doc.json": ("[1, 2]", "{p}: expected a mapping of option names to values, got list"),
        "broken.toml": ("epochs = [", "{p} is not valid TOML"),
        "config.ini": ("epochs=3", "use a .yaml, .yml, .toml or .json file"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        r = cli("train", "--config", str(p))
        assert r.returncode == 2 and message.format(p=p) in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr)
    r = cli("train", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_a_runs_config_json_repeats_the_run(tmp_path):
    first = tmp_path / "first"
    assert cli("train", "--epochs", "2", "--limit-train", "256", "--budget", "16", "--seed", "5", "--out", str(first),
               "--no-progress").returncode == 0
    again = tmp_path / "again"
    r = cli("train", "--config", str(first / "config.json"), "--out", str(again))
    assert r.returncode == 0, r.stderr
    assert strip_time(metrics(again)) == strip_time(metrics(first))  # bit-identical on the CPU
    cfg = json.loads((again / "config.json").read_text())["config"]
    assert cfg["out"] == str(again) and cfg["seed"] == 5 and cfg["budget"] == 16
