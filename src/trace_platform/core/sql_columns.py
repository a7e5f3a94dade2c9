"""Which columns a gated query reads, for the PII access audit.

The invariant: every column of the dataset a query can read (in its output, or only in
``WHERE``, ``JOIN``, ``GROUP BY``, ``ORDER BY``, a window, a lambda, ...) is in
``ColumnRefs.names``, or ``all_columns`` is set. It may over-report, never under-report.

A source column is either named (the name appears as a column reference, a struct access or
a ``USING`` column somewhere in the query: through any alias, CTE or subquery, the name is
written where the column is first read), or reached without its name. The second kind cannot
be resolved without the dataset's schema, so it counts as reading every column (fail closed):
``*`` and ``t.*`` (outside ``count(*)``), ``* EXCLUDE / REPLACE``, ``COLUMNS(...)``, a
relation named as a value (``SELECT t FROM dataset t`` is a struct of every column), a
column list renaming a relation's columns by position (``FROM dataset t(a, b, x)``),
``NATURAL`` joins (they read the common columns, named nowhere) and ``PIVOT``/``UNPIVOT``.
Works on the tree ``check_sql`` returns; anything it does not expect reads everything.
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


class _Unresolvable(Exception):
    """A column is read without being named."""


def column_refs(tree: exp.Expr) -> ColumnRefs:
    try:
        return ColumnRefs(False, frozenset(_named_columns(tree)))
    except _Unresolvable:
        return READS_EVERYTHING
    except Exception:  # an unexpected shape: fail closed
        return READS_EVERYTHING


def _named_columns(tree: exp.Expr) -> set[str]:
    relations: set[str] = set()
    bare: set[str] = set()  # single-part column names: a relation's name here is its whole row
    names: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Column):
            parts = [p.name.lower() for p in node.parts]
            if len(parts) == 1:
                bare.add(parts[0])
            names.update(parts)  # s.field reads s; t.col reads col
        elif isinstance(node, exp.Star):
            if not isinstance(node.parent, exp.Count):  # count(*) reads no column values
                raise _Unresolvable
        elif isinstance(node, exp.Table | exp.TableAlias):
            relations.add(node.name.lower())
            if isinstance(node, exp.TableAlias) and node.args.get("columns") and isinstance(node.parent, exp.Table):
                raise _Unresolvable  # FROM dataset t(a, b, x): renamed by position
        elif isinstance(node, exp.Columns | exp.Pivot) or (
            isinstance(node, exp.Anonymous) and node.name.lower() == "columns"
        ):
            raise _Unresolvable
        elif isinstance(node, exp.Dot):
            names.update(i.name.lower() for i in node.find_all(exp.Identifier))
        elif isinstance(node, exp.Join):
            if str(node.args.get("method") or "").upper() == "NATURAL":
                raise _Unresolvable  # reads the columns both sides share, named nowhere
            names.update(i.name.lower() for i in node.args.get("using") or [] if isinstance(i, exp.Expr))
    if bare & relations:
        raise _Unresolvable  # SELECT t FROM dataset t: the whole row as a struct
    return names
