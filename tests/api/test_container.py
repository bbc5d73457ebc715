"""The API image's recipe: its pins are the repository's, it runs as a non-root user, it copies what the API imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from tests.pins import pins

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_api_requirements_pin_what_the_repositorypins():
    image, repository = pins(REPO_ROOT / "api" / "requirements.txt"), pins(REPO_ROOT / "requirements.txt")
    assert image, "api/requirements.txt pins nothing"
    for name, version in image.items():
        assert repository.get(name) == version, (
            f"{name}=={version} in api/requirements.txt, {repository.get(name)} in requirements.txt"
        )


def test_dockerfile_base_user_and_copies():
    text = (REPO_ROOT / "api" / "Dockerfile").read_text()
    assert re.search(r"(?m)^FROM python:3\.11-slim\s*$", text)
    users = re.findall(r"(?m)^USER (\S+)", text)
    assert users and users[-1] not in ("root", "0")
    assert 'CMD ["python", "-m", "api"]' in text


def test_the_image_holds_every_first_party_module_the_api_imports():
    """Walk the API's imports from api/ (statically) and check the Dockerfile copies each repository module."""
    text = (REPO_ROOT / "api" / "Dockerfile").read_text()
    copied = set()
    for line in re.findall(r"(?m)^COPY (.+)$", text):
        for source in line.split()[:-1]:
            copied.add(source.rstrip("/"))

    def is_copied(module_path: Path) -> bool:
        relative = module_path.relative_to(REPO_ROOT).as_posix()
        return relative in copied or any(relative.startswith(c + "/") for c in copied)

    first_party = {"api", "configuration", "features", "training"}
    seen, todo = set(), list((REPO_ROOT / "api").rglob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        assert is_copied(path), f"{path.relative_to(REPO_ROOT)} is imported by the API but not copied into the image"
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                if name.split(".")[0] in first_party:
                    parts = name.split(".")
                    candidate = REPO_ROOT.joinpath(*parts)
                    for target in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                        if target.exists():
                            todo.append(target)
                    for i in range(1, len(parts)):
                        init = REPO_ROOT.joinpath(*parts[:i]) / "__init__.py"
                        if init.exists():
                            todo.append(init)
