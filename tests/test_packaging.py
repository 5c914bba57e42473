"""What ``pip install .`` puts into a user's environment: one top-level name, ``veil``.

A service that embeds veil very likely has a ``client`` or ``node`` module of its own, so
the three top-level folders of the repository must install as ``veil.onion``,
``veil.node`` and ``veil.client``, and nothing else may land beside ``veil`` in
site-packages. The test builds the real wheel from this checkout and installs it (without
its dependencies, which are not what is checked) into a new virtual environment.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    for name in ("veil", "onion", "node", "client"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True,
        cwd=out,
        timeout=300,
    )
    (built,) = out.glob("veil-*.whl")
    return built


def _python_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")}


def test_the_wheel_holds_only_the_veil_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    (dist_info,) = (name for name in top if name.endswith(".dist-info"))
    assert top - {dist_info} == {"veil"}
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "veil = veil.client.cli:main" in entry_points
    assert "veil-node = veil.node.cli:main" in entry_points


def test_every_module_of_the_three_folders_is_in_the_wheel(wheel: Path) -> None:
    """A sub-package missing from the wheel would import in the checkout and nowhere else."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("onion", "node", "client"):
        for module in _python_files(REPO / folder):
            assert f"veil/{folder}/{module}" in names, f"{folder}/{module} is not packaged"


def test_installing_leaves_no_client_node_or_onion_at_the_top(
    wheel: Path, tmp_path: Path
) -> None:
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    site = Path(purelib)
    installed = {p.name for p in site.iterdir()} - {"__pycache__"}
    assert "veil" in installed
    assert not installed & {"client", "node", "onion", "client.py", "node.py", "onion.py"}
    assert (site / "veil" / "onion" / "keys.py").is_file()
    for script in ("veil", "veil-node"):
        assert (env / "bin" / script).exists()
    # The installed copy is plain files, not links back into this checkout.
    assert not (site / "veil" / "onion").is_symlink()


_BARE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:onion|node|client)\b", re.MULTILINE)


def test_no_source_imports_the_folders_by_their_bare_names() -> None:
    """From the checkout's root ``import client`` works too, and would load a second copy
    of a module (two ``VeilError`` classes that do not catch each other); installed, it
    fails. Every import goes through ``veil.``."""
    offenders = [
        f"{path.relative_to(REPO)}:{source[: m.start()].count(chr(10)) + 1}"
        for top in ("onion", "node", "client", "tests", "scripts")
        for path in sorted((REPO / top).rglob("*.py"))
        for source in [path.read_text()]
        for m in _BARE_IMPORT.finditer(source)
    ]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["veil", *parts])


def _imported(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of ours that ``path`` (module ``name``) imports when it is loaded:
    module-level imports only (``if TYPE_CHECKING:`` blocks and imports inside
    functions do not run at load time), each with the packages it loads first, except
    ``name``'s own ancestors (they are being loaded already)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.Import):
            targets.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                target = ".".join([*base, *([stmt.module] if stmt.module else [])])
            else:
                target = stmt.module or ""
            targets.add(target)
            targets.update(f"{target}.{alias.name}" for alias in stmt.names)
    loaded: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in modules and module != name and not name.startswith(module + "."):
                loaded.add(module)
    return loaded


def test_no_import_circle_inside_the_packages() -> None:
    """A circle (a imports b imports a) works or breaks with the order of first imports;
    the tree is kept free of them, and no sub-module takes names from its own package's
    ``__init__`` (which re-exports the sub-modules: a circle through it)."""
    paths = {
        _module_name(path): path
        for top in ("onion", "node", "client")
        for path in (REPO / top).rglob("*.py")
    }
    graph = {name: _imported(path, name, set(paths)) for name, path in paths.items()}
    circles = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []

    through_init = []
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for stmt in ast.walk(ast.parse(path.read_text())):
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and not stmt.module:
                target = package
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                target = stmt.module
            else:
                continue
            if target != name and name.startswith(target + "."):
                through_init += [
                    f"{name}: {alias.name}"
                    for alias in stmt.names
                    if f"{target}.{alias.name}" not in paths
                ]
    assert through_init == []


def _loaded_after(code: str) -> set[str]:
    """The top-level and veil modules loaded by a fresh interpreter that runs ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    ).stdout.split()
    return {name for name in out if "." not in name or name.startswith("veil.")}


def test_the_protocol_package_loads_no_io() -> None:
    """veil.onion is sans-IO: importing every module of it loads no trio, httpx or
    sqlite3, and nothing of the node or the client."""
    modules = sorted(
        _module_name(path) for path in (REPO / "onion").rglob("*.py") if path.name != "__main__.py"
    )
    loaded = _loaded_after("\n".join(f"import {name}" for name in modules))
    assert not loaded & {"trio", "httpx", "httpcore", "sqlite3", "_sqlite3", "h11"}
    assert not {name for name in loaded if name.startswith(("veil.node", "veil.client"))}


def test_the_client_api_is_imported_lazily() -> None:
    """``from veil.client import open_client`` works, but a program that needs only the
    client's errors does not pay for trio and httpx."""
    assert not _loaded_after("import veil.client.errors") & {"trio", "httpx"}
    loaded = _loaded_after("from veil.client import open_client, VeilClient")
    assert {"trio", "httpx", "veil.client.veil_client"} <= loaded
