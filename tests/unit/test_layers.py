"""
The import contract: which package may import which, read from the source.

Values import nothing of ours; a provider package imports only values, the
provider-neutral layer (providers.common among it) and its own files; the
call core knows providers and stores only by their interfaces; the CLI
imports only the control client and its own rendering at start
(C{check-config} alone reads the config, lazily); and no two packages
import each other.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from twisted.trial.unittest import TestCase

import voicecalld

ROOT = os.path.dirname(voicecalld.__file__)

# Modules anyone may import: values only, or nothing of ours.
SHARED = ("voicecalld.values", "voicecalld.errors")
PROVIDER_NEUTRAL = (
    *SHARED,
    "voicecalld.config",
    "voicecalld.media",
    "voicecalld.web",
    "voicecalld.voice",
    "voicecalld.realtime",
    "voicecalld.providers.interface",
    "voicecalld.providers.common",
)


def modules() -> Iterator[tuple[str, str]]:
    """Every module of voicecalld: its dotted name and its file."""
    for folder, _dirs, files in os.walk(ROOT):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
                name = relative.replace(os.sep, ".").removesuffix(".__init__")
                yield name, path


def imports(path: str, *, top_level_only: bool = False) -> set[str]:
    """The voicecalld modules a file imports (at its top level only, if asked)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n.startswith("voicecalld.") or n == "voicecalld"}


def within(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def package(name: str) -> str:
    return ".".join(name.split(".")[:2])


class ImportContract(TestCase):
    """Each rule, checked over every module."""

    def breaches(self, prefix: str, allowed: tuple[str, ...], **options) -> list[str]:
        found = []
        for name, path in modules():
            if not within(name, (prefix,)):
                continue
            for imported in imports(path, **options):
                if not within(imported, (*allowed, prefix)) and imported != "voicecalld":
                    found.append(f"{name} imports {imported}")
        return sorted(found)

    def test_values_import_nothing_of_ours(self):
        self.assertEqual(self.breaches("voicecalld.values", ()), [])

    def test_provider_packages_import_only_values_and_the_neutral_layer(self):
        providers = os.path.join(ROOT, "providers")
        for entry in sorted(os.listdir(providers)):
            if os.path.isdir(os.path.join(providers, entry)) and not entry.startswith("_"):
                own = f"voicecalld.providers.{entry}"
                self.assertEqual(self.breaches(own, PROVIDER_NEUTRAL), [], own)
        self.assertEqual(self.breaches("voicecalld.providers.mock", PROVIDER_NEUTRAL), [])

    def test_the_call_core_knows_providers_and_stores_by_interface_only(self):
        allowed = (
            *SHARED,
            "voicecalld.config",
            "voicecalld.voice.replies",
            "voicecalld.providers.interface",
            "voicecalld.store.interface",
        )
        self.assertEqual(self.breaches("voicecalld.calls", allowed), [])

    def test_media_and_voice_know_no_calls_and_no_providers(self):
        for layer in ("voicecalld.media", "voicecalld.voice"):
            allowed = (*SHARED, "voicecalld.config", "voicecalld.media", "voicecalld.voice")
            self.assertEqual(self.breaches(layer, allowed), [], layer)

    def test_the_cli_starts_with_the_control_client_and_its_rendering_only(self):
        allowed = (
            *SHARED,
            "voicecalld.cli",
            "voicecalld.control.client",
            "voicecalld.control.commands",
            "voicecalld.paths",
            "voicecalld.__version__",
        )
        self.assertEqual(self.breaches("voicecalld.cli", allowed, top_level_only=True), [])

    def test_no_two_packages_import_each_other(self):
        edges: dict[str, set[str]] = {}
        for name, path in modules():
            for imported in imports(path, top_level_only=True):
                if package(imported) != package(name):
                    edges.setdefault(package(name), set()).add(package(imported))
        cycles = sorted(
            f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, ())
        )
        self.assertEqual(cycles, [])
