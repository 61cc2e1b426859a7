"""Packaging contracts: conda's environment.yml mirrors pyproject, check-env and the CLI work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from minimost.__main__ import main
from minimost.check_env import runtime_requirements

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_deps() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    """environment.yml pins what pyproject pins for Python 3.11 (the version it creates), nothing else."""
    yml = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in yml
    pip_lines = [ln.strip()[2:].strip() for ln in yml.split("- pip:")[1].splitlines() if ln.strip().startswith("- ")]
    listed = sorted(ln for ln in pip_lines if not ln.startswith("-e"))
    expected = []
    for dep in _pyproject_deps():
        req, _, marker = dep.partition(";")
        if "python_version < '3.11'" in marker:
            continue  # environment.yml creates Python 3.11
        expected.append(req.strip())
    assert listed == sorted(expected)
    assert any(ln.startswith('-e ".[dev]"') for ln in pip_lines), "environment.yml must install minimost itself"


def test_check_env_reads_requirements_from_package_metadata():
    names = {r.name for r in runtime_requirements()}
    assert {"torch", "torchaudio", "numpy", "espeakng-loader", "safetensors"} <= names
    assert all(r.spec.startswith("==") for r in runtime_requirements()), "runtime deps are pinned"


def test_check_env_runs_and_passes_here():
    out = subprocess.run([sys.executable, "-m", "minimost", "check-env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch device:" in out.stdout and "espeak-ng" in out.stdout and "[OK]      torch" in out.stdout


def test_every_command_has_help(capsys):
    for command in ("run", "train", "eval", "synth", "bench", "check-env"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert len(capsys.readouterr().out) > 100


def test_unbuilt_commands_say_so(capsys):
    if not _exists("minimost.evaluate"):
        assert main(["eval"]) == 2
        assert "not built yet" in capsys.readouterr().err


def test_config_errors_exit_cleanly(capsys):
    assert main(["train", "--preset", "micro", "--set", "top_k=9"]) == 2
    assert "config error" in capsys.readouterr().err


def test_print_config_is_valid_json(capsys):
    import json
    assert main(["train", "--preset", "micro", "--stage", "posttrain", "--set", "lr=0.01", "--print-config"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["train"]["lr"] == 0.01 and data["train"]["mixture"]["asr"] == 0.4
    assert data["model"]["d_model"] == 64


def test_bench_lists_scripts(capsys):
    assert main(["bench"]) == 0
    assert "available benchmarks" in capsys.readouterr().out


def _exists(module):
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_the_machine_description_names_the_instruction_set_torch_uses():
    # Results depend on it (the kit's units train to other weights on AVX2 than on AVX-512), so every
    # report and benchmark line must say it.
    import torch

    from minimost.check_env import describe_machine
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the description names the GPU")
    assert f"({torch.backends.cpu.get_cpu_capability()})," in describe_machine()
