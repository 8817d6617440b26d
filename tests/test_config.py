"""A wrong config names the field and what was expected, exits with code 2 and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgetune.errors import InputError
from edgetune.search.cli import cli
from edgetune.search.config import load_config

from helpers import tiny_config, write_config


def run_cli(args: list[str], cwd: Path) -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=cwd):
        result = runner.invoke(cli, args, catch_exceptions=False)
        written = sorted(str(p) for p in Path(".").rglob("*"))
    return result.exit_code, result.output + "\n".join(written)


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"search": {"trials": 0}}, "search.trials", "greater than or equal to 1"),
    ({"search": {"sampler": "bayes"}}, "search.sampler", "'tpe', 'nsga2', 'gp' or 'random'"),
    ({"search": {"trails": 5}}, "search.trails", "unknown key"),
    # A key written like pydantic's union tags is still the user's.
    ({"search": {"[": None}}, "search.[", "unknown key"),
    ({"target": {"threads": "two"}}, "target.threads", "valid integer"),
    ({"space": {"pruning": {"methods": []}}}, "space.pruning.methods", "at least 1 item"),
    ({"space": {"recovery": {"steps": {"low": -1, "high": 3}}}}, "space.recovery.steps.low",
     "greater than or equal to 0"),
])
def test_config_errors_name_the_field(tmp_path: Path, tiny_model: Path, tiny_csv: Path,
                                      change: dict, field: str, expected: str) -> None:
    path = write_config(tmp_path, tiny_config(tiny_model, tiny_csv, **change))
    with pytest.raises(InputError) as error:
        load_config(path)
    assert error.value.where == field
    assert expected in error.value.message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("study: x\ntask: [unclosed\n")
    with pytest.raises(InputError) as error:
        load_config(path)
    assert "bad.yaml:" in error.value.where and "not valid YAML" in error.value.message


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path, tiny_model: Path,
                                               tiny_csv: Path) -> None:
    config = write_config(tmp_path, tiny_config(tiny_model, tiny_csv, search={"trials": -3}))
    code, output = run_cli(["run", str(config)], tmp_path)
    assert code == 2
    assert "search.trials" in output
    assert "runs" not in output  # no run folder, no database


def test_missing_model_folder_exits_2(tmp_path: Path, tiny_csv: Path) -> None:
    config = write_config(tmp_path, tiny_config(tmp_path / "nowhere", tiny_csv))
    code, output = run_cli(["run", str(config)], tmp_path)
    assert code == 2
    assert "task.model: no such folder" in output
    assert "runs" not in output


def test_unknown_command_and_help(tmp_path: Path) -> None:
    code, output = run_cli(["frobnicate"], tmp_path)
    assert code == 2
    code, output = run_cli(["run", "--help"], tmp_path)
    assert code == 0 and "--trials" in output and "--storage" in output
