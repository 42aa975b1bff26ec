"""The layout rules of README "Architecture": which package may import which, checked on every module's AST.

An import anywhere in a module counts, at module level or inside a function (a lazy import is still a dependency);
``TYPE_CHECKING`` blocks too. Relative imports are resolved against the module's package. The rules:

- ``planning.engine`` imports no Django (nor DRF) and nothing of the project outside ``planning.engine``.
- The pure statistics of ``outcomes`` import no Django and nothing of the project but each other and
  ``planning.engine`` (NTCP evaluates the engine's EQD2/gEUD).
- ``workflow.pathway`` imports neither ``workflow.toxicity`` nor ``workflow.carepaths``; those two do not import each
  other; the shared modules at ``workflow/`` top level import no domain, except the registries Django reads
  (``workflow.models``, ``workflow.admin``, ``workflow.apps``).
- ``workflow`` imports nothing of ``outcomes`` or ``planning`` but the allowed edges listed in ``WORKFLOW_OUTWARD``.
- No import circle among the project's modules (module-level imports, the ones that run at import time).
- Admin registration only in modules named ``admin``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workflow", "planning", "outcomes", "config")
PROJECT = PACKAGES + ("tests", "benchmarks")

PURE_STATS = {f"outcomes.{m}" for m in ("survival", "endpoints", "response", "toxicity_stats", "ntcp", "deidentify", "figures",
                                          "rmst", "landmark", "competing", "iptw")}
WORKFLOW_DOMAINS = ("workflow.pathway", "workflow.toxicity", "workflow.carepaths")
WORKFLOW_REGISTRIES = {"workflow.models", "workflow.admin", "workflow.apps"}
WORKFLOW_OUTWARD = {
    # /api/toxicity-events/analysis/ serves the cohort toxicity analysis, which is the outcomes app's
    ("workflow.toxicity.api", "outcomes.toxicity_analysis"),
}
WEB_FRAMEWORKS = ("django", "rest_framework", "drf_spectacular", "simple_history", "django_filters")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


class Imports(ast.NodeVisitor):
    """Every imported module of one file: (name, line, at module level)."""

    def __init__(self, module, is_package):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found = []
        self.depth = 0

    def _add(self, name, node):
        self.found.append((name, node.lineno, self.depth == 0))

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        self._add(target, node)
        for alias in node.names:  # ``from pkg import module`` depends on pkg.module
            if alias.name != "*":
                self._add(f"{target}.{alias.name}", node)


def module_files():
    return {module_name(p): p for p in project_files()}


MODULES = module_files()


def imports_of(module):
    path = MODULES[module]
    visitor = Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(), str(path)))
    return visitor.found


def project_import(name):
    """The project module an import names (``from workflow.pathway import scheduling`` -> that module), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def violations(modules, forbidden):
    """[(module, line, imported)] for every import of ``modules`` that ``forbidden(module, imported)`` rejects."""
    out = []
    for module in modules:
        for name, line, _ in imports_of(module):
            if forbidden(module, name):
                out.append((module, line, name))
    return sorted(set(out))


def under(prefix):
    return [m for m in MODULES if within(m, prefix)]


def in_project(name):
    return name.split(".")[0] in PROJECT


def test_the_rules_see_the_layout():
    """The walk finds the packages the rules are about (a renamed package must not make every rule pass)."""
    for package in ("planning.engine", *WORKFLOW_DOMAINS):
        assert len(under(package)) >= 5, package
    assert PURE_STATS <= set(MODULES)
    assert ("workflow.pathway.delivery", "workflow.pathway.gates") in {
        (m, project_import(n)) for m in under("workflow.pathway") for n, _, _ in imports_of(m)
    }


def test_engine_is_a_pure_library():
    bad = violations(
        under("planning.engine"),
        lambda m, n: n.split(".")[0] in WEB_FRAMEWORKS or (in_project(n) and not within(n, "planning.engine")),
    )
    assert bad == []


def test_outcomes_statistics_are_pure():
    def forbidden(module, name):
        if name.split(".")[0] in WEB_FRAMEWORKS:
            return True
        target = project_import(name)
        if not in_project(name) or target is None:
            return False
        return not (target in PURE_STATS or target == "outcomes" or within(target, "planning.engine"))

    assert violations(sorted(PURE_STATS), forbidden) == []


def test_pathway_core_imports_neither_toxicity_nor_carepaths():
    bad = violations(
        under("workflow.pathway"),
        lambda m, n: within(n, "workflow.toxicity") or within(n, "workflow.carepaths"),
    )
    assert bad == []


def test_toxicity_and_carepaths_are_independent():
    assert violations(under("workflow.toxicity"), lambda m, n: within(n, "workflow.carepaths")) == []
    assert violations(under("workflow.carepaths"), lambda m, n: within(n, "workflow.toxicity")) == []


def test_shared_workflow_modules_import_no_domain():
    shared = [m for m in under("workflow") if not any(within(m, d) for d in WORKFLOW_DOMAINS) and m not in WORKFLOW_REGISTRIES]
    shared = [m for m in shared if not within(m, "workflow.templatetags") and not within(m, "workflow.management")]
    assert "workflow.errors" in shared and "workflow.roles" in shared
    bad = violations(shared, lambda m, n: any(within(n, d) for d in WORKFLOW_DOMAINS))
    assert bad == []


def test_workflow_imports_outcomes_and_planning_only_where_documented():
    def forbidden(module, name):
        target = project_import(name)
        return (within(name, "outcomes") or within(name, "planning")) and (module, target) not in WORKFLOW_OUTWARD

    assert violations(under("workflow"), forbidden) == []


def import_graph():
    graph = {}
    for module in MODULES:
        edges = set()
        for name, _, top in imports_of(module):
            target = project_import(name)
            if top and target and target != module and not within(module, target):  # a package's own __init__
                edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_admin_registration_only_in_admin_modules(package):
    bad = []
    for module in under(package):
        if module.rpartition(".")[2] == "admin":
            continue
        source = MODULES[module].read_text()
        if "admin.site.register(" in source or "@admin.register(" in source:
            bad.append(module)
    assert bad == []


def test_a_forbidden_import_is_reported(tmp_path, monkeypatch):
    """The pathway rule fails on a pathway module that imports a toxicity one (a fake module, not on disk)."""
    fake = tmp_path / "scheduling_extra.py"
    fake.write_text("def f():\n    from ..toxicity import services\n")
    monkeypatch.setitem(MODULES, "workflow.pathway.scheduling_extra", fake)
    bad = violations(["workflow.pathway.scheduling_extra"], lambda m, n: within(n, "workflow.toxicity"))
    assert bad == [("workflow.pathway.scheduling_extra", 2, "workflow.toxicity"),
                   ("workflow.pathway.scheduling_extra", 2, "workflow.toxicity.services")]
