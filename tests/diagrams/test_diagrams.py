"""The architecture diagrams render to real PNGs, stay in step with docker-compose.yml, and say what is missing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from architecture.render import DIAGRAMS, source

REPO_ROOT = Path(__file__).resolve().parents[2]
DIAGRAM_DIR = REPO_ROOT / "architecture"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's dot is not installed (Debian package graphviz: apt-get install -y graphviz)",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "architecture", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    with Image.open(path) as image:
        image.verify()  # checks the chunks and their CRCs
    with Image.open(path) as image:
        width, height = image.size
        assert 800 <= width <= 4000 and 800 <= height <= 4000, f"{path.name} is {width}x{height}"
        colours = image.convert("RGB").resize((200, 200)).getcolors(maxcolors=200 * 200)
        assert len(colours) > 50, f"{path.name} looks blank ({len(colours)} colours)"


@needs_graphviz
def test_renders_every_diagram_to_a_valid_png(tmp_path):
    result = run_cli("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{name}.png" for name in DIAGRAMS), "only the PNGs, no Graphviz source left behind"
    for name in DIAGRAMS:
        check_png(tmp_path / f"{name}.png")
        assert f"wrote {tmp_path / name}.png" in result.stdout


@needs_graphviz
def test_only_renders_the_named_diagram(tmp_path):
    result = run_cli("--out", str(tmp_path), "--only", "aws-deployment")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["aws-deployment.png"]


def test_committed_pngs_are_the_diagrams_and_valid():
    committed = sorted(p.stem for p in DIAGRAM_DIR.glob("*.png"))
    assert committed == sorted(DIAGRAMS), "render them with: python -m architecture"
    for name in DIAGRAMS:
        check_png(DIAGRAM_DIR / f"{name}.png")
    readme = (DIAGRAM_DIR / "README.md").read_text()
    for name in DIAGRAMS:
        assert f"({name}.png)" in readme, f"the README does not show {name}.png"


def node_labels(dot_source: str) -> list[str]:
    return re.findall(r'\[label="([^"]*)"', dot_source)


def test_compose_diagram_draws_every_service_of_docker_compose():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    first_words = set()
    for label in node_labels(source("compose-cluster")):
        words = re.sub(r"^\d+\. ", "", label).split()
        if words[:1] == ["volume"]:
            first_words.add(f"volume {words[1]}")
        elif words:
            first_words.add(words[0])
    missing = set(compose["services"]) - first_words
    assert not missing, f"docker-compose.yml services missing from the compose diagram: {sorted(missing)}"
    for volume in ("lake", "data"):  # the volumes the stages share (the databases' own are not drawn)
        assert volume in compose["volumes"] and f"volume {volume}" in first_words


def test_local_stack_diagram_shows_the_ports_of_the_settings():
    from configuration.settings import load_settings

    settings = load_settings()
    text = "\n".join(node_labels(source("local-stack")))
    for port in (settings.api.port, settings.serving.port, settings.stack.metastore_port, settings.stack.thrift_port):
        assert f":{port}" in text


def test_without_graphviz_says_what_to_install(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("--out", str(tmp_path / "out"), env={"PATH": str(empty), "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, "one line, no traceback"
    assert "apt-get install -y graphviz" in result.stderr
    assert not (tmp_path / "out").exists()
