"""A study stays on this machine: no network connection, no telemetry, no code run from a
checkpoint unless the config trusts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import transformers
from click.testing import CliRunner

from edgetune.search.cli import cli

from helpers import edgetune_command, tiny_config, write_config

# What edgetune sets for itself at import (edgetune/__init__.py): a test of its privacy must run
# with none of them inherited from the test process, which imported edgetune already.
EDGETUNE_DEFAULTS = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_DATASETS_OFFLINE",
                     "NNCF_CI", "DO_NOT_TRACK")
QAT = {"pruning.method": "none", "quantization.scheme": "qat", "qat.steps": 5,
       "qat.learning_rate": 1e-5, "qat.export": "qdq"}
# loads the base twice (student and teacher), then the pruned checkpoint (from its config)
PRUNED_DISTILLED = {"pruning.method": "structured", "pruning.heads_kept": 0.5,
                    "pruning.ffn_kept": 0.5, "pruning.scope": "layer",
                    "pruning.layers_dropped": 1, "pruning.layer_selection": "even",
                    "recovery.steps": 10,
                    "recovery.learning_rate": 1e-3, "recovery.distillation": True,
                    "recovery.temperature": 2.0, "recovery.alpha": 0.5,
                    "quantization.scheme": "none", "graph.fusion": False}

# Refuses every non-loopback connection and name lookup from Python, and records the attempt.
REFUSE_NETWORK = textwrap.dedent('''
    import ipaddress, json, os, socket

    LOG = os.environ["EDGETUNE_TEST_NETWORK_LOG"]

    def _refuse(what):
        with open(LOG, "a") as log:
            log.write(json.dumps(str(what)) + "\\n")
        raise ConnectionRefusedError(f"network refused by the test: {what}")

    def _loopback(host):
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return host in ("localhost", "")

    def _guard(method):
        def guarded(self, address, *rest):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                _refuse(address)
            return method(self, address, *rest)
        return guarded

    def _sendto(method):
        def guarded(self, data, *rest):
            address = rest[-1]
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                _refuse(address)
            return method(self, data, *rest)
        return guarded

    socket.socket.connect = _guard(socket.socket.connect)
    socket.socket.connect_ex = _guard(socket.socket.connect_ex)
    socket.socket.sendto = _sendto(socket.socket.sendto)
    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *rest, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if host is not None and not _loopback(name):
            _refuse(host)
        return _getaddrinfo(host, *rest, **kwargs)

    socket.getaddrinfo = getaddrinfo
''')


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EDGETUNE_DEFAULTS}
    return {**env, **extra}


def in_own_network_namespace() -> list[str]:
    """``unshare -n`` when this user may (root): the kernel then refuses every outside address,
    C libraries included."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"],
                                                  capture_output=True).returncode == 0:
        return ["unshare", "-n", "--"]
    return []


def test_a_study_runs_with_every_outside_connection_refused(tmp_path: Path, tiny_model: Path,
                                                            tiny_csv: Path) -> None:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(REFUSE_NETWORK)
    log = tmp_path / "network.log"
    config = write_config(tmp_path, tiny_config(  # fine-tuning, export, NNCF QAT, measurement
        tiny_model, tiny_csv, finetune={"steps": 10},
        space={"quantization": {"schemes": ["none", "qat"],
                                "qat": {"steps": {"low": 5, "high": 5}}}},
        search={"trials": 2, "enqueue": [QAT]}))
    result = subprocess.run(
        [*in_own_network_namespace(),
         *edgetune_command("run", config, "--run-dir", tmp_path / "run", "--json")],
        capture_output=True, text=True, timeout=900, check=False,
        env=clean_env(PYTHONPATH=str(guard), EDGETUNE_TEST_NETWORK_LOG=str(log),
                      EDGETUNE_CACHE_DIR=str(tmp_path / "cache")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["front"]
    assert not log.exists(), f"connections attempted: {log.read_text()}"


def test_nncf_telemetry_is_off_once_edgetune_is_imported() -> None:
    """In a process of its own (NNCF also turns telemetry off inside pytest), NNCF's telemetry
    is on before edgetune is imported and off after."""
    probe = textwrap.dedent("""
        import importlib
        import nncf.telemetry.wrapper as wrapper
        def state():
            return "off" if isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub) else "on"
        before = state()
        import edgetune
        importlib.reload(wrapper)  # NNCF decides at import: now as if imported after edgetune
        print(before, state())
    """)
    result = subprocess.run([sys.executable, "-c", probe], env=clean_env(),
                            capture_output=True, text=True, check=True)
    assert result.stdout.split()[-2:] == ["on", "off"]


@pytest.mark.parametrize("trusted", [False, True])
def test_trust_remote_code_reaches_every_load_and_only_when_configured(
        trusted: bool, tmp_path: Path, tiny_model: Path, tiny_csv: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETUNE_CACHE_DIR", str(tmp_path / "cache"))  # every load happens
    seen: list[tuple[str, object]] = []

    def recording(name: str, load):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((name, kwargs.get("trust_remote_code", False)))
            return load(*args, **kwargs)
        return wrapper

    for owner, method in [(transformers.AutoConfig, "from_pretrained"),
                          (transformers.AutoTokenizer, "from_pretrained"),
                          (transformers.AutoModelForSequenceClassification, "from_pretrained"),
                          (transformers.AutoModelForSequenceClassification, "from_config")]:
        monkeypatch.setattr(owner, method,
                            recording(f"{owner.__name__}.{method}", getattr(owner, method)))
    config = tiny_config(tiny_model, tiny_csv, finetune={"steps": 5},
                         space={"quantization": {"schemes": ["none"]},
                                "graph": {"fusion": [False]}},
                         search={"trials": 2, "enqueue": [PRUNED_DISTILLED]})
    config["task"]["trust_remote_code"] = trusted
    result = CliRunner().invoke(cli, ["run", str(write_config(tmp_path, config)),
                                      "--run-dir", str(tmp_path / "run")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {name for name, _ in seen} == {
        "AutoConfig.from_pretrained", "AutoTokenizer.from_pretrained",
        "AutoModelForSequenceClassification.from_pretrained",
        "AutoModelForSequenceClassification.from_config"}
    assert {flag for _, flag in seen} == {trusted}
