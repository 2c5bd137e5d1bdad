"""The library's shape, read from its source with `ast`: who may import what.

1. Only lib_lora/webui/ and scripts/ import the WebUI (modules, launch), gradio only they
   and the host-agnostic Gradio app lib_lora/ui/, and only inside functions, so the library
   imports and tests without the WebUI.
2. Dependencies flow one way (DESIGN.md: webui/ui/cli -> jobs -> training/ops/evaluation
   -> networks/dataset/tagging/models -> config). The units are lib_lora's subpackages and
   top-level modules; every import from one unit into another must be in ALLOWED:

   layer    units                                  may also import, inside the layer
   door     webui ui cli __main__ bench demo       __main__ -> cli; cli -> demo, bench, webui;
                                                   bench -> webui (its WebUI-path figures); webui -> ui
   jobs     jobs train_job                         (one Job system, issue 16 item 1); train_job -> jobs
   actions  training ops evaluation                evaluation -> training (run_hint reads a run's plan)
   domain   networks dataset tagging models        models -> networks (adapters build NetworkTargets,
                                                   the network's input); tagging -> dataset (images,
                                                   captions, file kinds)
   base     config presets options errors fileio  presets -> config/options/fileio; config -> options;
            safe_paths checkpoint_io cache_folders checkpoint_io -> fileio; fileio -> safe_paths;
            device_check precisions                config -> precisions (save precisions' names);
            lib_lora (__version__)                 all -> errors; lib_lora, errors, precisions import nothing

   A unit imports any unit of a lower layer, and of its own layer only what is listed.
   presets.py (saved option sets) is config-level; checkpoint_io.py (lazy checkpoint
   reading, streaming writer) sits below both models/ and ops/, which share it;
   cache_folders.py and device_check.py are small leaves over errors; precisions.py (save
   precisions and their dtypes) is a leaf below config.py, networks/ and ops/; bench/ (the
   `bench` command) and demo.py are entry points like cli.py.
3. No import cycles between any two modules of lib_lora, inside a package or across.
4. The library never imports the repository's tests/, scripts/ or tools/.
5. Size and style, in every package and scripts/: files at most 400 lines, functions at most
   60, `from __future__ import annotations` in every module but __init__/__main__.

What counts as an import: every `import`/`from` statement anywhere in a module, at module
level, inside a function or under `if TYPE_CHECKING`. A lazy import inside a function is
still a dependency (it runs whenever the function does); importing late "to avoid a
cycle" hides a cycle without removing it. `from .pkg import name` is an edge to pkg's
module `name` when that is a module, else to pkg/__init__.py. Only modules named by
string (cli.EXTERNAL_COMMANDS, via importlib) are not seen; cli may import them all.

KNOWN_EXCEPTIONS lists the few edges that break 2-4 today, each with its reason; an
entry that no longer occurs fails the test so the list only shrinks.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib_lora"
WEBUI_NAMES = {"modules", "gradio", "launch"}
REPO_ONLY = {"tests", "scripts", "tools"}

BASE = {"lib_lora", "errors", "options", "safe_paths", "path_policy", "fileio", "config", "presets", "checkpoint_io",
        "cache_folders", "device_check", "precisions"}
DOMAIN = {"networks", "dataset", "tagging", "models"}
ACTIONS = {"training", "ops", "evaluation"}
BELOW_DOOR = BASE | DOMAIN | ACTIONS | {"jobs", "train_job"}

ALLOWED: dict[str, set[str]] = {
    "lib_lora": set(),
    "errors": set(),
    "precisions": set(),
    "options": {"errors"},
    "safe_paths": {"errors"},
    "path_policy": {"errors", "safe_paths"},
    "cache_folders": {"errors"},
    "device_check": {"errors"},
    "fileio": {"errors", "safe_paths"},
    "config": {"errors", "options", "precisions"},
    "checkpoint_io": {"errors", "fileio"},
    "presets": {"errors", "options", "config", "fileio"},
    "networks": BASE,
    "models": BASE | {"networks"},     # an adapter builds its NetworkTargets (networks/target.py)
    "dataset": BASE,
    "tagging": BASE | {"dataset"},
    "training": BASE | DOMAIN,
    "ops": BASE | DOMAIN,
    "evaluation": BASE | DOMAIN | {"training"},
    "jobs": BASE | DOMAIN | ACTIONS,
    "train_job": BASE | DOMAIN | ACTIONS | {"jobs"},      # training as a Job: the hooks adapter, pause, outcome
    "ui": BELOW_DOOR,
    "webui": BELOW_DOOR | {"ui"},
    "bench": BELOW_DOOR | {"webui"},
    "demo": BELOW_DOOR,
    "cli": BELOW_DOOR | {"demo", "bench", "webui", "ui"},
    "__main__": {"cli"},
}

# (importing module, imported module) -> why it is tolerated for now. Keep this short.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
}


def _imports(tree: ast.AST):
    """(top-level package, line, inside a function?) for every absolute import in a module."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module.split(".")[0], child.lineno, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def test_only_webui_layer_imports_the_webui_and_only_lazily():
    """modules/launch only in the door (webui/, scripts/); gradio also in the host-agnostic ui/."""
    bad = []
    for path in list((ROOT / "lib_lora").rglob("*.py")) + list((ROOT / "scripts").glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        door = rel.startswith("lib_lora/webui/") or rel.startswith("scripts/")
        for name, line, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            allowed = door or (name == "gradio" and rel.startswith("lib_lora/ui/"))
            if name in WEBUI_NAMES and (not allowed or not in_function):
                bad.append(f"{rel}:{line} imports {name}" + ("" if allowed else " outside the door"))
    assert not bad, "\n".join(bad)


# ---- the module graph ----------------------------------------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement reaches: submodules where named, else the package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")[:None if is_package else -1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]


def _known(name: str) -> str:
    """The innermost lib_lora module a dotted name falls in ('' outside lib_lora), or the name itself
    for the repository's own folders."""
    if name.split(".")[0] in REPO_ONLY:
        return name
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> ['path:line (in a function)', ...] for every import inside lib_lora."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in {_known(t) for t in _targets(module, path.name == "__init__.py", node)}:
                    if target and target != module:
                        edges[(module, target)].append(f"{rel}:{node.lineno}")
    return edges


EDGES = _edges()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_allowed_edges_table_is_one_way():
    order: list[str] = []
    visiting: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in visiting, f"ALLOWED has a cycle: {' -> '.join(path + (unit,))}"
        if unit in order:
            return
        visiting.add(unit)
        for target in sorted(ALLOWED.get(unit, ())):
            visit(target, path + (unit,))
        visiting.discard(unit)
        order.append(unit)

    for unit in ALLOWED:
        visit(unit, ())


def test_every_import_between_units_is_in_the_allowed_table():
    bad = []
    for (source, target), where in sorted(EDGES.items()):
        if target.split(".")[0] in REPO_ONLY or (source, target) in KNOWN_EXCEPTIONS:
            continue
        unit, imported = _unit(source), _unit(target)
        if unit not in ALLOWED:
            bad.append(f"{source} is in unit {unit!r}, which ALLOWED does not place: add it to the table")
        elif unit != imported and imported not in ALLOWED[unit]:
            bad.append(f"{unit} -> {imported} is not allowed: {source} imports {target} at {', '.join(where)}")
    assert not bad, "imports against the layering (tests/test_architecture.py docstring):\n" + "\n".join(bad)


def test_library_never_imports_the_repository_folders():
    bad = [f"{source} imports {target} at {', '.join(where)}" for (source, target), where in sorted(EDGES.items())
           if target.split(".")[0] in REPO_ONLY and (source, target) not in KNOWN_EXCEPTIONS]
    assert not bad, "lib_lora must work without tests/, scripts/ and tools/:\n" + "\n".join(bad)


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when the graph has none (depth-first, colours)."""
    state: dict[str, int] = {}   # 1 on the current path, 2 finished
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_find_cycle_reports_the_path():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in EDGES:
        if target in MODULES and (source, target) not in KNOWN_EXCEPTIONS:
            graph[source].add(target)
    cycles = []
    while (cycle := _find_cycle(graph)) and len(cycles) < 20:
        cycles.append("\n".join(f"  {a} -> {b} ({', '.join(EDGES[(a, b)])})" for a, b in zip(cycle, cycle[1:])))
        graph[cycle[-2]].discard(cycle[-1])  # cut it to find the next one
    assert not cycles, "import cycles (move the shared code to a module below both):\n" + "\n\n".join(cycles)


def test_known_exceptions_still_occur():
    stale = [f"{source} -> {target}" for source, target in KNOWN_EXCEPTIONS if (source, target) not in EDGES]
    assert not stale, "fixed, remove from KNOWN_EXCEPTIONS in tests/test_architecture.py: " + ", ".join(stale)


# ---- size and style ------------------------------------------------------------------------------

MAX_FILE_LINES = 400      # the project's limits (a file a reader takes in whole, a function on a screen)
MAX_FUNCTION_LINES = 60
PRODUCT_FILES = sorted(LIB.rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))


def test_files_and_functions_stay_small():
    """Every module of every package (and the WebUI entry script) within the size limits; a nested
    function counts inside its parent and on its own."""
    too_big = []
    for path in PRODUCT_FILES:
        text, rel = path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_big.append(f"{rel}: {len(text.splitlines())} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and length > MAX_FUNCTION_LINES:
                too_big.append(f"{rel}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    assert not too_big, "split these:\n" + "\n".join(too_big)


def test_modules_use_postponed_annotations():
    """`from __future__ import annotations` everywhere but package markers and `python -m` entry points,
    so annotations naming optional or WebUI-only types never run at import."""
    missing = [path.relative_to(ROOT).as_posix() for path in PRODUCT_FILES
               if path.name not in ("__init__.py", "__main__.py")
               and "from __future__ import annotations" not in path.read_text(encoding="utf-8")]
    assert not missing, "add `from __future__ import annotations` to: " + ", ".join(missing)
