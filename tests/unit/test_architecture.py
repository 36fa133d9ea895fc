"""The shape rules: shared/ never imports a service, services never import each other, and code names
topics only through the registry."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared import topics

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _py_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_the_five_services_exist():
    assert SERVICES == ["booking", "feedback", "identity", "insights", "loyalty"]


@pytest.mark.parametrize("path", _py_files(ROOT / "shared"), ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_never_imports_a_service(path):
    offending = [m for m in _imports(path) if m == "services" or m.startswith("services.") or m.startswith("hub")]
    assert not offending, f"{path} imports {offending}"


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another_service(service):
    for path in _py_files(ROOT / "services" / service):
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1:
                assert parts[1] == service, f"{path.relative_to(ROOT)} imports {module}"
            assert parts[0] != "hub", f"{path.relative_to(ROOT)} imports the launcher ({module})"


def test_the_launcher_never_imports_a_service():
    for path in _py_files(ROOT / "hub"):
        assert not [m for m in _imports(path) if m.startswith("services")], path


def _topic_constants_used(service: str) -> set[str]:
    used = set()
    for path in _py_files(ROOT / "services" / service):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "shared.topics":
                used |= {a.name for a in node.names if a.name.isupper() and a.name != "REGISTRY"}
    return used


@pytest.mark.parametrize("service", SERVICES)
def test_every_topic_a_service_uses_is_registered_with_that_service(service):
    for constant in _topic_constants_used(service):
        spec = getattr(topics, constant)
        assert spec.name in topics.REGISTRY
        assert service in spec.producers + spec.consumers, f"{service} uses {spec.name} but is not listed on it"


def test_registry_lists_only_known_services_and_every_consumed_topic_has_a_dead_letter_topic():
    for spec in topics.REGISTRY.values():
        assert set(spec.producers + spec.consumers) <= set(topics.SERVICES), spec.name
        assert spec.partitions >= 1 and spec.key and spec.why
    names = {s.name for s in topics.all_topics()}
    for spec in topics.REGISTRY.values():
        if spec.consumers:
            assert f"{spec.name}.dlq" in names
