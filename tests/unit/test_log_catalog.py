"""
The log-code catalog against the source: every C{log_code} the daemon logs
is in L{voicecalld.logs.catalog}, at the catalog's level, every catalog code
is logged somewhere, and docs/logs.md lists them all.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

from twisted.trial.unittest import TestCase

import voicecalld
from voicecalld.logs.catalog import CATALOG, markdown

ROOT = os.path.dirname(voicecalld.__file__)
DOCS = os.path.join(os.path.dirname(ROOT), "docs", "logs.md")
CATALOG_FILE = os.path.join(ROOT, "logs", "catalog.py")
# A log call's method and the level it logs at.
LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "error": "error",
    "critical": "critical",
    "failure": "critical",
}


def sources() -> Iterator[tuple[str, ast.AST]]:
    for folder, _dirs, files in os.walk(ROOT):
        for file in sorted(files):
            path = os.path.join(folder, file)
            if file.endswith(".py") and path != CATALOG_FILE:
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read())


def log_calls() -> Iterator[tuple[str, int, str, ast.expr]]:
    """(file, line, method, log_code value) of every log call that names a code."""
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                for keyword in node.keywords:
                    if keyword.arg == "log_code":
                        yield path, node.lineno, node.func.attr, keyword.value


def pattern(value: ast.JoinedStr) -> re.Pattern[str]:
    """An f-string code as a regex: each placeholder is one lowercase word."""
    parts = [
        re.escape(part.value) if isinstance(part, ast.Constant) else "[a-z_]+"
        for part in value.values
    ]
    return re.compile("".join(parts) + "$")


def literals() -> set[str]:
    """Every string constant of the source (codes kept in constants count as used)."""
    return {
        node.value
        for _path, tree in sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


class CatalogMatchesSource(TestCase):
    def test_every_logged_code_is_in_the_catalog_at_its_level(self):
        wrong = []
        for path, line, method, value in log_calls():
            where = f"{path}:{line}"
            if isinstance(value, ast.Constant):
                entry = CATALOG.get(value.value)
                if entry is None:
                    wrong.append(f"{where}: {value.value} is not in the catalog")
                elif method in LEVELS and LEVELS[method] != entry.level:
                    wrong.append(
                        f"{where}: {value.value} logged at {LEVELS[method]},"
                        f" catalog says {entry.level}"
                    )
            elif isinstance(value, ast.JoinedStr):
                if not any(pattern(value).match(code) for code in CATALOG):
                    wrong.append(f"{where}: no catalog code fits {ast.unparse(value)}")
        self.assertEqual(wrong, [])

    def test_indirect_codes_come_from_catalog_constants(self):
        # A code passed through a name (web/guard.py's refusals, a provider's
        # class attribute) is a constant somewhere: every code-shaped constant
        # of a known group must be in the catalog.
        groups = {entry.group for entry in CATALOG.values()}
        shaped = re.compile(r"^([a-z]+)\.[a-z]+(_[a-z]+)*$")
        strays = sorted(
            text
            for text in literals()
            if (m := shaped.match(text))
            and m.group(1) in groups - {"realtime", "streaming", "call", "turn"}
            and text not in CATALOG
            and not text.endswith((".py", ".md", ".json", ".sock", ".log"))
        )
        self.assertEqual(strays, [])

    def test_every_catalog_code_is_logged(self):
        used = literals()
        patterns = [pattern(v) for *_, v in log_calls() if isinstance(v, ast.JoinedStr)]
        unused = sorted(
            code
            for code in CATALOG
            if code != "log.suppressed"
            and code not in used
            and not any(p.match(code) for p in patterns)
        )
        self.assertEqual(unused, [])

    def test_codes_are_grouped_and_leveled(self):
        for entry in CATALOG.values():
            self.assertRegex(entry.code, r"^[a-z]+\.[a-z_]+$")
            self.assertIn(entry.level, set(LEVELS.values()))
            self.assertTrue(entry.meaning)

    def test_docs_list_the_catalog(self):
        with open(DOCS, encoding="utf-8") as f:
            docs = f.read()
        self.assertIn(markdown(), docs, "regenerate the table: python -m voicecalld.logs.catalog")


# Where a peer's request is refused: each warning there is one rejection.
REJECTIONS = (
    "web/guard.py",
    "providers/common/webhook.py",
    "media/stream.py",
    "control/guard.py",
    "control/server.py",
    "calls/admission.py",
)


class RejectionsCarryCodeAndPeer(TestCase):
    def test_every_rejection_warning_names_its_code_and_peer(self):
        missing = []
        for path, tree in sources():
            if path not in REJECTIONS:
                continue
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("warn", "error")
                    and "log" in ast.unparse(node.func.value)
                ):
                    names = {k.arg for k in node.keywords}
                    if not {"log_code", "peer"} <= names:
                        missing.append(f"{path}:{node.lineno} has {sorted(names)}")
        self.assertEqual(missing, [])
