"""Which columns a gated query reads, for the PII access audit.

Conservative by design: ``*`` (outside ``count(*)``), ``COLUMNS(...)``, or naming a
relation as a value (DuckDB turns ``SELECT dataset FROM dataset`` into a struct of
every column) counts as reading every column. Works on the tree ``check_sql`` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlglot import exp


@dataclass(frozen=True)
class ColumnRefs:
    all_columns: bool
    names: frozenset[str]  # lowercased

    def classified(self, pii_columns: Iterable[str]) -> tuple[str, ...]:
        """The classified columns among those read."""
        return tuple(c for c in pii_columns if self.all_columns or c.lower() in self.names)


READS_EVERYTHING = ColumnRefs(True, frozenset())


def column_refs(tree: exp.Expr) -> ColumnRefs:
    relation_names = {t.name.lower() for t in tree.find_all(exp.Table)}
    relation_names |= {t.alias_or_name.lower() for t in tree.find_all(exp.Table)}
    relation_names |= {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    names: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Star) and isinstance(node.parent, exp.Count):
            continue  # count(*) reads no column values
        if isinstance(node, exp.Star) or (isinstance(node, exp.Anonymous) and node.name.lower() == "columns"):
            return READS_EVERYTHING
        if isinstance(node, exp.Column):
            name = node.name.lower()
            if name in relation_names and not node.table:
                return READS_EVERYTHING
            names.add(name)
    return ColumnRefs(False, frozenset(names))
