"""The API image's recipe: its pins are the repository's, it runs as a non-root user, it copies what the API imports."""

from __future__ import annotations

import re
from pathlib import Path
from tests.images import uncopied_imports
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
    # Not `monitoring`: the image holds monitoring.figures only, and the console says so when
    # `import monitoring` fails (api/console/pages.py).
    packages = {"api", "configuration", "features", "training"}
    missing = uncopied_imports(REPO_ROOT / "api" / "Dockerfile", sorted((REPO_ROOT / "api").rglob("*.py")), packages)
    assert not missing, f"imported by the API but not copied into the image: {missing}"
