"""The package's shape holds: the policy core loads and runs without zmq or asyncio, no module
imports one that imports it back, functions stay short, the admin shell stays thin, and a
plain install (runtime dependencies only) imports every shipped module."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE = REPO / "ceylon_net"
MAX_FUNCTION_LINES = 40
MAX_SHELL_LINES = 350


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_the_admin_state_loads_and_decides_without_zmq_or_asyncio():
    script = """
import sys
from ceylon_net import wire
from ceylon_net.core.admin_state import AdminState
from ceylon_net.core.commands import Assign, Finished
from ceylon_net.core.tasks import Task, TaskResult
from ceylon_net.settings import AdminSettings
st = AdminState(AdminSettings(port=0), now=0.0)
hello = wire.Hello("w", "default", 5, 1)
frames = lambda kind, msg: wire.encode_frames(
    kind, wire.make_header("default", "w", wire.type_name(msg)), wire.pack(msg))
st.receive(b"w/1", frames(wire.Kind.HELLO, hello), "127.0.0.1", now=0.1)
cmds = st.submit([Task(1, "one")], now=0.2)
assert [a.task.id for c in cmds if isinstance(c, Assign) for a in c.assignments] == [1]
result = wire.encode_frames(wire.Kind.RESULT, wire.make_header("default", "w", "TaskResult"),
                            wire.pack_batch([TaskResult(1, "w", True)]))
cmds = st.receive(b"w/1", result, "127.0.0.1", now=0.3)
assert [c.task_id for c in cmds if isinstance(c, Finished)] == [1]
loaded = sorted(m for m in ("zmq", "asyncio") if m in sys.modules)
print("loaded:", loaded)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded: []"


def test_a_serving_admin_or_worker_leaves_the_libraries_it_does_not_use_unloaded():
    """prometheus_client (3.4 MiB), rich (2.5) and sqlite3 (0.9) come with --metrics-port, a
    report or progress bar to print, and --journal: not with every admin (W4's memory); so do
    wsgiref and the http.server and email it imports (1.6 MiB), with --metrics-port."""
    script = """
import sys
import ceylon_net.cli.admin, ceylon_net.cli.worker, ceylon_net.edge.admin
print("loaded:", sorted(m for m in ("prometheus_client", "rich", "sqlite3", "wsgiref",
                                    "http.server", "email") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded: []"


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules ``name`` imports anywhere in its file (TYPE_CHECKING blocks and
    function bodies too: a cycle there is still two modules that know each other)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found |= subs or {base}
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    mods = modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_core_imports_nothing_from_the_edge_the_cli_or_dev_tooling():
    mods = modules()
    for name, path in mods.items():
        if name.startswith(("ceylon_net.core", "ceylon_net.wire")):
            outward = {m for m in _imports(name, path, set(mods))
                       if m.startswith(("ceylon_net.edge", "ceylon_net.cli", "ceylon_net.dev"))}
            assert outward == set(), name


def test_no_function_is_longer_than_40_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_admin_shell_is_thin():
    tree = ast.parse((PACKAGE / "edge" / "admin.py").read_text())
    (shell,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Admin"]
    assert shell.end_lineno - shell.lineno + 1 < MAX_SHELL_LINES


def _runtime_closure() -> list[md.Distribution]:
    """The distributions pyproject.toml's runtime dependencies need here, transitively."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(d) for d in project["dependencies"]]
    seen: dict[str, md.Distribution] = {}
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen[key] = md.distribution(key)
        todo += [Requirement(r) for r in seen[key].requires or ()]
    return list(seen.values())


@pytest.mark.timeout(180)
def test_a_plain_install_imports_every_shipped_module(tmp_path):
    """A wheel of the project, installed beside its runtime dependencies only (copied from this
    environment: no network), imports every module it ships."""
    # The build backend is the pinned setuptools of the test extra: nothing is downloaded.
    # Built from a copy of what it needs, not the checkout: setuptools writes build/ and an
    # egg-info beside its sources, and a stale file there would be shipped.
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "ceylon_net", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=120,
                   capture_output=True)
    env_dir = tmp_path / "plain"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    for dist in _runtime_closure():
        for f in dist.files or ():
            src = Path(dist.locate_file(f))
            if src.is_file() and ".." not in f.parts:
                (site / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, site / f)
    (wheel,) = (tmp_path / "dist").glob("ceylon_net-*.whl")
    shutil.unpack_archive(wheel, site, "zip")
    shipped = sorted(modules())
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    out = subprocess.run([str(python), "-I", "-c", probe, *shipped], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    shipped_files = sorted(str(p.relative_to(site)) for p in (site / "ceylon_net").rglob("*.py"))
    in_repo = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py"))
    assert shipped_files == in_repo  # every module of the checkout is in the wheel
    # and its data: the dashboard page is served from the installed package
    page = site / "ceylon_net" / "edge" / "dashboard.html"
    assert page.read_bytes() == (PACKAGE / "edge" / "dashboard.html").read_bytes()
