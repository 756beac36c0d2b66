"""setup.py installs what the Beam jobs import on their workers.

Dataflow workers get only ``install_requires`` (``--setup_file``); a module
imported there but not listed fails on the worker, often late: pictures need
matplotlib and pillow, so ``predict --beam`` once lost every patient at its
last step.  The imports are read with ``ast`` from the jobs' entry modules,
following the project's own modules, including imports inside functions.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

from tests.helpers import ROOT

BEAM_ENTRY_MODULES = ("beam_pipeline.preprocess", "beam_pipeline.launch", "serving.predict", "serving.batch_predict")
LOCAL_PACKAGES = {"beam_pipeline", "preprocessing", "serving", "shared", "synthetic", "trainer", "configs", "tests"}


def _module_file(name: str):
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    """Dotted names a module imports, anywhere in it (function-level imports too)."""
    path = _module_file(name)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # may be submodules
    return found


def third_party_imports(entries=BEAM_ENTRY_MODULES) -> dict[str, str]:
    """Top-level third-party module -> the project module that imports it, over the entries' closure."""
    seen, todo, third_party = set(), list(entries), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module):
            top = name.split(".")[0]
            if top in LOCAL_PACKAGES:
                if _module_file(name) is not None:
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, module)
    return third_party


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def install_requires() -> set[str]:
    """Distribution names in setup.py's install_requires, read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {_canonical(re.split(r"[\[<>=!~; ]", spec)[0]) for spec in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires")


def test_the_import_walk_sees_a_function_level_import():
    # serving.outputs imports the pictures module inside write_pictures; it imports matplotlib
    assert third_party_imports(("serving.outputs",))["matplotlib"] == "serving.pictures"


def test_setup_py_installs_every_module_the_beam_jobs_import():
    providers = importlib.metadata.packages_distributions()
    required = install_requires()
    missing = {}
    for module, importer in sorted(third_party_imports().items()):
        distributions = {_canonical(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported by {importer}) is not installed here"
        if not distributions & required:
            missing[module] = (sorted(distributions), importer)
    assert not missing, "setup.py install_requires lacks: " + ", ".join(
        f"{'/'.join(d)} (module {m}, imported by {i})" for m, (d, i) in missing.items())
