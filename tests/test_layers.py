"""The packages form floors, and every import points down (docs/design.md, "Layers").

Each module's imports are read with ``ast`` (those inside functions too, which is where a lazy
import would hide an upward dependency), resolved to the project package they name, and checked
against the declared order: a module may import its own package and the floors below, never a
floor above. The scripts (the entry points, ``bench/`` and ``tests/``) stand on top and may
import anything.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# lowest first; a package may import its own modules and those of the floors below it
FLOORS = ("core", "configs", "dataloaders", "models", "evaluation", "inference", "training", "alignment")
FLOOR = {name: i for i, name in enumerate(FLOORS)}
SCRIPTS = ("train_t5_stagcn.py", "caption.py", "demo.py")


def project_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every absolute import in ``path`` that names a project package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside their package
        found += [(node.lineno, name) for name in names if name.split(".")[0] in FLOOR]
    return found


def upward_imports(root: Path = REPO) -> list[str]:
    """Every import of a higher floor, as ``file:line: package -> imported name``."""
    problems = []
    for package in FLOORS:
        for path in sorted((root / package).rglob("*.py")):
            for line, name in project_imports(path):
                target = name.split(".")[0]
                if FLOOR[target] > FLOOR[package]:
                    problems.append(f"{path.relative_to(root)}:{line}: {package} (floor {FLOOR[package]}) "
                                    f"imports {name} (floor {FLOOR[target]})")
    return problems


def test_every_package_has_a_floor():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(FLOORS), (f"packages without a floor: {sorted(packages - set(FLOORS))}; "
                                     f"floors without a package: {sorted(set(FLOORS) - packages)}")


def test_no_import_points_up():
    problems = upward_imports()
    assert not problems, "imports that point up a floor:\n" + "\n".join(problems)


def test_the_check_sees_an_upward_import(tmp_path):
    """A planted upward import, lazy inside a function, is reported with its file and line."""
    for package in FLOORS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "models" / "ok.py").write_text("from dataloaders.x import y\nfrom . import sibling\n")
    (tmp_path / "models" / "bad.py").write_text("import numpy\n\n\ndef f():\n    from training import run\n")
    assert upward_imports(tmp_path) == [
        "models/bad.py:5: models (floor 3) imports training (floor 6)"]


def test_scripts_import_only_project_packages_that_exist():
    for script in SCRIPTS:
        for line, name in project_imports(REPO / script):
            module = REPO / Path(*name.split("."))
            assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), \
                f"{script}:{line}: imports {name}, which is not in the repository"


@pytest.mark.parametrize("module", ["configs.schema", "core.io", "core.cider"])
def test_light_modules_stay_light(module):
    """The schema learns its choices without loading torch or the data and model code."""
    heavy = {"configs.schema": ("torch", "dataloaders", "models", "evaluation", "training"),
             "core.io": ("dataloaders", "models", "evaluation", "training", "configs"),
             "core.cider": ("torch", "dataloaders", "models", "evaluation", "training", "configs")}[module]
    code = (f"import sys, {module}; "
            f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"importing {module} loads {loaded.stdout.strip()}"


def test_graph_layouts_match_the_schema():
    from configs.schema import LAYOUT_NAMES
    from models.graph import LAYOUTS

    assert tuple(LAYOUTS) == LAYOUT_NAMES
