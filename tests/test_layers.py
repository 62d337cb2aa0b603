"""The layer rule (docs/ARCHITECTURE.md): the library does not import the demo model's training code (cxrlm_tiny),
except the command line's verbs, inside the function that runs them, so `cxrlm --help` and every library module
load without it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tiny_imports(tree: ast.AST):
    """(line, at module level?) of every import of cxrlm_tiny in a module."""
    top = {id(node) for node in ast.iter_child_nodes(tree)}
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(n == "cxrlm_tiny" or n.startswith("cxrlm_tiny.") for n in names):
            yield node.lineno, id(node) in top


def offending_imports(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "cxrlm").rglob("*.py")):
        relative = path.relative_to(root)
        for line, module_level in _tiny_imports(ast.parse(path.read_text(), str(path))):
            if relative.parts[:2] != ("cxrlm", "cli") or module_level:
                found.append(f"{relative}:{line}")
    return found


def test_the_library_imports_cxrlm_tiny_only_from_the_cli_and_lazily():
    assert offending_imports(ROOT) == []


def test_the_scan_finds_a_library_import_and_a_module_level_cli_import(tmp_path):
    for name, text in {"cxrlm/train/x.py": "def f():\n    from cxrlm_tiny import cnn\n",
                       "cxrlm/cli/y.py": "import cxrlm_tiny.recipe\n",
                       "cxrlm/cli/z.py": "def run():\n    from cxrlm_tiny.probes import tower_probe\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert offending_imports(tmp_path) == ["cxrlm/cli/y.py:1", "cxrlm/train/x.py:2"]


def test_cxrlm_tiny_is_installed_with_cxrlm():
    import tomllib

    from setuptools import find_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "cxrlm_tiny" in find_packages(str(ROOT), include=include)


def test_no_library_module_is_a_script():
    """Every entry point is a `cxrlm` verb; `python -m cxrlm` (cxrlm/__main__.py) is the only main."""
    scripts = []
    for path in sorted([*(ROOT / "cxrlm").rglob("*.py"), *(ROOT / "cxrlm_tiny").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and getattr(node.left, "id", None) == "__name__":
                scripts.append(str(path.relative_to(ROOT)))
    assert scripts == []
