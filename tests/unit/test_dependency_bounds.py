"""Every dependency has an upper bound, so a breaking release never reaches users unasked."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def _requirements() -> list[str]:
    project = PYPROJECT["project"]
    found = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        found += extra
    for group in PYPROJECT["dependency-groups"].values():
        found += [item for item in group if isinstance(item, str)]
    return found


def test_every_dependency_has_an_upper_bound() -> None:
    """Each requirement in dependencies, extras and groups says `<` (or pins with `==`)."""
    unbounded = [
        text
        for text in _requirements()
        if not any(spec.operator in {"<", "<=", "==", "~="} for spec in Requirement(text).specifier)
    ]
    assert _requirements()
    assert unbounded == []
