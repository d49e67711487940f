"""Every TensorRT attribute the nst packages use must exist in both TensorRT 10.x and 11.x.

No TensorRT install needed: the name sets in ``tests/export/data/trt_names_<VERSION>.txt`` were made by
``tools/trt_names.py`` from the official bindings wheels (``tensorrt-cu12-bindings==10.16.1.11`` and
``tensorrt-cu13-bindings==11.4.0.106``): every string in the compiled module that is a whole identifier, i.e. every
class, method, property and enum member pybind11 registers, and no docstring text. Regenerate them with
``python tools/trt_names.py VERSION CUDA_MAJOR`` (see ``../shared/tools/trt-api-reference`` for the full dump).

The walk covers all nst packages (export and runtime both write TensorRT code). It follows
* the module alias: ``import tensorrt as trt``, ``import tensorrt_lean``, ``x = import_optional("tensorrt", ...)``,
  ``x = import_tensorrt()``, any name or parameter called ``trt``;
* TensorRT objects: names and ``self.`` attributes assigned from calls or attributes on the alias or on other
  TensorRT objects (``builder = trt.Builder(...)``, ``config = builder.create_builder_config()``,
  ``self._engine = runtime.deserialize_cuda_engine(...)``), per function, with ``self.`` attributes per class,
  and parameters annotated with ``trt.Something``;
and checks each ``.name`` taken of those, ``getattr(obj, "name")`` and ``from tensorrt import name``.
``getattr(obj, "name", default)`` and ``hasattr`` are deliberate version probes and are not checked; code
that probes must still behave correctly when the name is absent.
Attribute names that every str/bytes/int/tuple/... has are not checked (a method may return a plain value).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
VERSIONS = ("10.16.1.11", "11.4.0.106")
PACKAGES = ("train/nst_train", "export/nst_export", "runtime/nst_runtime", "benchmarks/nst_bench")
TRT_MODULES = {"tensorrt", "tensorrt_lean", "tensorrt_dispatch"}
_ALIAS_CALLEE = re.compile(r".*tensorrt.*|_?(import_|load_|get_)?trt", re.IGNORECASE)
_PLAIN = set().union(*(dir(t) for t in (object, str, bytes, int, float, bool, tuple, list, dict, memoryview,
                                        type(None))))


class Names:
    """A version's identifier set. The linker stores a string that is the tail of another only once
    (``Builder`` lives inside ``IExprBuilder``), so a name counts as present if it ends a stored identifier."""

    def __init__(self, path: Path) -> None:
        stored = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        self.suffixes = {s[i:] for s in stored for i in range(len(s))}
        self.count = len(stored)

    def __contains__(self, name: str) -> bool:
        return name in self.suffixes


@dataclass(frozen=True)
class Use:
    file: str
    line: int
    name: str
    expr: str


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _callee_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


class _Scope:
    def __init__(self, aliases: set[str], objects: set[str]) -> None:
        self.aliases = set(aliases)
        self.objects = set(objects)

    def is_trt(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.aliases or node.id in self.objects
        if isinstance(node, ast.Attribute):
            return _dotted(node) in self.objects or self.is_trt(node.value)
        if isinstance(node, ast.Call):
            return self.is_trt(node.func)
        if isinstance(node, ast.Subscript):
            return self.is_trt(node.value)
        return False


def _module_aliases(tree: ast.AST) -> tuple[set[str], list[tuple[int, str]]]:
    aliases, from_imports = {"trt"}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in TRT_MODULES:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom) and node.module in TRT_MODULES:
            for a in node.names:
                from_imports.append((node.lineno, a.name))
                aliases.add(a.asname or a.name)  # a class or enum of tensorrt: its attributes are checked too
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            by_string = any(isinstance(a, ast.Constant) and a.value in TRT_MODULES for a in call.args)
            if by_string or _ALIAS_CALLEE.fullmatch(_callee_name(call) or "-"):
                aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return aliases, from_imports


def _bindings(body: list[ast.AST]) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs of the assignments and with-items in these statements, nested blocks included."""
    pairs = []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Assign):
                pairs += [(t, node.value) for t in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                pairs.append((node.target, node.value))
            elif isinstance(node, ast.NamedExpr):
                pairs.append((node.target, node.value))
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs.append((node.optional_vars, node.context_expr))
    return pairs


def _grow(scope: _Scope, pairs: list[tuple[ast.AST, ast.AST]]) -> None:
    changed = True
    while changed:
        changed = False
        for target, value in pairs:
            key = _dotted(target)
            if key and key not in scope.objects and scope.is_trt(value):
                scope.objects.add(key)
                changed = True


def _annotated_params(fn: ast.FunctionDef | ast.AsyncFunctionDef, aliases: set[str]) -> set[str]:
    found = set()
    for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs):
        ann = a.annotation
        text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else (
            ast.unparse(ann) if ann is not None else "")
        if any(re.search(rf"\b{re.escape(al)}\.", text) for al in aliases) or a.arg in {"trt", "tensorrt"}:
            found.add(a.arg)
    return found


def trt_uses(source: str, filename: str = "<string>") -> list[Use]:
    """Every attribute name taken of the tensorrt module or a TensorRT object in ``source``."""
    tree = ast.parse(source, filename)
    aliases, from_imports = _module_aliases(tree)
    uses = [Use(filename, line, name, f"from tensorrt import {name}") for line, name in from_imports]
    module = _Scope(aliases, set())
    _grow(module, _bindings([n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                         ast.ClassDef))]))

    def class_attrs(cls: ast.ClassDef) -> set[str]:
        scope = _Scope(module.aliases, module.objects)
        methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        pairs = [p for m in methods for p in _bindings(m.body)]
        for m in methods:  # locals of each method may feed self.* (x = trt.Runtime(...); self.rt = x)
            local = _Scope(scope.aliases, scope.objects | _annotated_params(m, scope.aliases))
            _grow(local, _bindings(m.body))
            scope.objects |= {o for o in local.objects if o.startswith("self.")}
        _grow(scope, pairs)
        return {o for o in scope.objects if o.startswith("self.")}

    def visit(node: ast.AST, scope: _Scope) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, _Scope(scope.aliases, scope.objects | class_attrs(child)))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = _Scope(scope.aliases, scope.objects | _annotated_params(child, scope.aliases))
                _grow(inner, _bindings(child.body))
                visit(child, inner)
            else:
                check(child, scope)
                visit(child, scope)

    def check(node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Attribute) and scope.is_trt(node.value):
            uses.append(Use(filename, node.lineno, node.attr, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) == 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and scope.is_trt(node.args[0])):
            # getattr(obj, "name", default) and hasattr() are deliberate version probes: not checked
            uses.append(Use(filename, node.lineno, node.args[1].value, ast.unparse(node)))

    visit(tree, module)
    return uses


def missing(uses: list[Use], names: dict[str, Names]) -> list[str]:
    out = []
    for u in uses:
        if u.name.startswith("__") or u.name in _PLAIN:
            continue
        absent = [v for v, ns in names.items() if u.name not in ns]
        if absent:
            out.append(f"{u.file}:{u.line}: {u.expr} -- {u.name!r} not in TensorRT {', '.join(absent)}")
    return out


@pytest.fixture(scope="module")
def names() -> dict[str, Names]:
    result = {}
    for v in VERSIONS:
        path = DATA / f"trt_names_{v}.txt"
        assert path.is_file(), f"{path} missing; regenerate with tools/trt_names.py"
        result[v] = Names(path)
        assert result[v].count > 1000, f"{path} looks truncated ({result[v].count} names)"
    return result


def _project_uses() -> list[Use]:
    uses = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            uses += trt_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return uses


def test_every_tensorrt_name_used_by_nst_exists_in_10_and_11(names):
    uses = _project_uses()
    # the walk must actually see the engine builder, or this test would pass on nothing
    seen = {u.name for u in uses}
    assert {"build_serialized_network", "STRONGLY_TYPED", "create_optimization_profile",
            "EXCLUDE_LEAN_RUNTIME"} <= seen, sorted(seen)
    problems = missing(uses, names)
    assert not problems, "TensorRT names missing from a supported version:\n" + "\n".join(problems)


def test_checker_flags_names_removed_in_tensorrt_10_or_11(names):
    code = '''
import tensorrt as trt
from nst_runtime._lazy import import_optional

def build(logger):
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    fast = builder.platform_has_fast_fp16
    return builder.build_engine(network, config)

class Runner:
    def __init__(self, blob):
        lean = import_optional("tensorrt_lean", purpose="x", install="y")
        self.engine = lean.Runtime(lean.Logger()).deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()

    def run(self, bindings, stream):
        index = self.engine.get_binding_index("input")
        self.context.execute_async_v2(bindings, stream)
        return getattr(self.engine, "num_bindings")
'''
    flagged = {p.split("--")[1].split()[0].strip("'") for p in missing(trt_uses(code), names)}
    assert flagged == {"EXPLICIT_BATCH", "FP16", "platform_has_fast_fp16", "build_engine", "get_binding_index",
                       "execute_async_v2", "num_bindings"}
    removed_in_11 = missing(trt_uses("import tensorrt as trt\nx = trt.BuilderFlag.FP16\n"), names)
    assert removed_in_11 and "11.4.0.106" in removed_in_11[0] and "10.16.1.11" not in removed_in_11[0]


def test_checker_does_not_flag_plain_values_or_other_objects(names):
    code = '''
import tensorrt as trt

def io_names(engine: "trt.ICudaEngine", config):
    name = engine.get_tensor_name(0)
    config.max_batch_size = 4          # an unrelated object: not checked
    legacy = getattr(engine, "num_bindings", None)   # a guarded probe: not checked
    return name.upper(), engine.num_io_tensors, legacy
'''
    assert missing(trt_uses(code), names) == []
    assert {u.name for u in trt_uses(code)} >= {"get_tensor_name", "num_io_tensors"}
