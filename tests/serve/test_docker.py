"""The Docker recipe: compose services call real CLI commands, and the CPU requirements keep torch but drop CUDA.

No Docker engine runs on CI machines, so the image itself is not built here (docs/serving.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from typer.main import get_command

from mammocad.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_run_existing_commands_and_options():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"api", "dashboard", "mlflow"}
    cli = get_command(app)
    for name in ("api", "dashboard"):
        argv = compose["services"][name]["command"]
        assert argv[0] == "mammocad"
        command = cli.commands[argv[1]]
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {arg for arg in argv[2:] if arg.startswith("--")} <= known
    for service in compose["services"].values():
        assert any(volume.endswith(":/runs") for volume in service["volumes"])


def test_cpu_requirements_keep_the_locked_torch_and_drop_cuda():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pattern = re.search(r"grep -v -E '([^']+)'", dockerfile)
    assert pattern is not None
    exported = subprocess.run(
        [
            str(ROOT / "scripts" / "uv"),
            "export",
            "--frozen",
            "--no-dev",
            "--all-extras",
            "--no-hashes",
            "--no-emit-project",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    kept = [line for line in exported if not re.search(pattern.group(1), line)]
    names = {re.split(r"[=<> ;]", line, maxsplit=1)[0] for line in kept if line and not line.startswith(("#", " "))}
    assert {"torch", "torchvision", "onnxruntime", "fastapi", "streamlit"} <= names
    assert not any(name.startswith(("nvidia-", "triton", "cuda-")) for name in names)
