"""The shape of the code, kept: no import cycles, training and evaluation independent of each other, no function
longer than a screen, and every model honouring the contract that training reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from cifar10cnn.models import build_classifier, create_model, list_models, parameter_roles

SRC = Path(__file__).resolve().parents[1] / "src" / "cifar10cnn"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = ["cifar10cnn", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}, lazy (in-function) imports included."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in modules and c != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep] if dep in path else [node, dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_training_and_evaluation_do_not_import_each_other():
    graph = import_graph()
    for name, deps in graph.items():
        for a, b in (("training", "evaluation"), ("evaluation", "training")):
            if name.startswith(f"cifar10cnn.{a}"):
                assert not [d for d in deps if d.startswith(f"cifar10cnn.{b}")], (name, deps)


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)


@pytest.mark.parametrize("name", list_models())
def test_every_model_declares_what_training_reads(name):
    """The head is the network's last layer (head(features) = the logits), features feed it, the Grad-CAM layer
    is a convolution that runs, and the roles name real parameters."""
    options = {"resolution": 64} if name.startswith("efficientnet") else {}
    model = build_classifier(name, [0.5] * 3, [0.25] * 3, 10, **options).eval()
    net = model.net
    x = model.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    head = net.get_classifier()
    assert isinstance(head, torch.nn.Linear) and head.out_features == 10
    with torch.no_grad():
        assert torch.allclose(head(net.forward_features(x)), net(x), atol=1e-5)
    seen = []
    handle = net.cam_layer().register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        net(x)
    handle.remove()
    assert isinstance(net.cam_layer(), torch.nn.Conv2d) and len(seen) == 1 and len(seen[0]) == 4
    roles = net.param_roles()
    assert set(roles) <= dict(net.named_parameters()).keys()
    assert {n for n, r in roles.items() if "head" in r} == {f"{n}" for n, p in net.named_parameters()
                                                            if any(p is q for q in head.parameters())}
    assert len(parameter_roles(model)) == len(roles)
    assert net.input_size == 32 and isinstance(net.needs_data_init, bool)


def test_a_model_that_breaks_the_contract_is_refused_at_creation():
    from cifar10cnn.models import register_model
    from cifar10cnn.models.registry import _REGISTRY

    @register_model("not-a-contract")
    def bare(num_classes: int = 10):
        return torch.nn.Linear(3, num_classes)

    try:
        with pytest.raises(TypeError, match="ModelContract"):
            create_model("not-a-contract")
    finally:
        del _REGISTRY["not-a-contract"]
