"""The images' recipes against the code: every repository module an image's entry point imports is copied."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from configuration.settings import REPO_ROOT


def uncopied_imports(dockerfile: Path, roots: list[Path], packages: set[str]) -> list[str]:
    """The modules of `packages` reachable by imports (statically, at any depth) from `roots` that the
    Dockerfile's COPY lines leave out, as paths relative to the repository."""
    copied = set()
    for line in re.findall(r"(?m)^COPY (.+)$", dockerfile.read_text()):
        for source in line.split()[:-1]:
            copied.add(source.rstrip("/"))

    def is_copied(relative: str) -> bool:
        return any(relative == c or relative.startswith(c + "/") or _glob(c, relative) for c in copied)

    missing, seen, todo = [], set(), list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        relative = path.relative_to(REPO_ROOT).as_posix()
        if not is_copied(relative):
            missing.append(relative)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                # `from a.b import c`: module a.b, and a.b.c too when c is a module rather than a name in a.b.
                else [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                if name.split(".")[0] in packages:
                    parts = name.split(".")
                    candidate = REPO_ROOT.joinpath(*parts)
                    for target in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                        if target.exists():
                            todo.append(target)
                    for i in range(1, len(parts)):
                        init = REPO_ROOT.joinpath(*parts[:i]) / "__init__.py"
                        if init.exists():
                            todo.append(init)
    return sorted(missing)


def _glob(pattern: str, relative: str) -> bool:
    """`serving/*.py` style COPY sources: one folder level, a `*` in the file name."""
    if "*" not in pattern:
        return False
    folder, _, name = pattern.rpartition("/")
    here, _, file = relative.rpartition("/")
    return here == folder and re.fullmatch(re.escape(name).replace(r"\*", "[^/]*"), file) is not None
