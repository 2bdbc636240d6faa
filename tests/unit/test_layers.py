"""The layers: the cameron package (settings, store, protocol, web) never imports the actors,
which are built on it; Thespian loads the Supervisor by its name."""

import ast
from pathlib import Path

from cameron import actorsys
from cameron.config import ROOT


def test_no_module_of_cameron_imports_the_actors():
    imports = []
    for path in sorted((ROOT / "cameron").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            imports += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "actors"]
    assert imports == []


def test_the_supervisor_named_for_thespian_is_a_class_of_the_actors():
    module, name = actorsys.SUPERVISOR.rsplit(".", 1)
    assert Path(ROOT, *module.split(".")).with_suffix(".py").is_file()
    assert f"class {name}(" in Path(ROOT, *module.split(".")).with_suffix(".py").read_text()
