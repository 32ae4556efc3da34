"""What tests and the load test may import: a test module imports no other test module (what
they share lives in tests/support or in a fixture), and the load test no underscored name
of the app."""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(folder: str) -> Iterator[tuple[Path, str, list[str]]]:
    """(file, module, imported names) of every `from ... import` and `import` under `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, []


def is_test_module(module: str) -> bool:
    """tests.unit.*, tests.integration.*, tests.e2e.*, tests.conftest, tests.test_*: all
    of tests but the support package."""
    parts = module.split(".")
    return parts[0] == "tests" and len(parts) > 1 and parts[1] != "support"


def test_no_test_module_imports_another_when_tests_share_helpers() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module, _ in imports("tests")
        if is_test_module(module)
    ]
    assert found == [], "move what tests share to tests/support or a fixture"


def test_the_load_test_imports_no_private_name_of_the_app() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {module} {name}"
        for path, module, names in imports("loadtest")
        if module.split(".")[0] == "app"
        for name in [*names, *module.split(".")]
        if name.startswith("_") and name != "__main__"
    ]
    assert found == []
