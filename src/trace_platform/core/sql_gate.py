"""Fail-closed SQL gate of the Query Service.

``check_sql`` accepts exactly one read-only DuckDB query over an allowlisted set of relations
and raises ``SqlRejected`` for everything else. The gate is allowlist-first: every node of the
sqlglot (DuckDB dialect) syntax tree must be a known-safe expression class, every function call
a known-safe DuckDB function (by the names sqlglot generates for DuckDB and the names written
before "(" in the text, never by sqlglot's classes), and every relation either a visible CTE
or an allowed relation name. Anything unknown is rejected. See ``docs/sql_gate.md`` for the
rationale and the reason codes.

The gate never logs, stores or echoes the SQL text: ``SqlRejected`` carries a stable reason
code and a fixed description only, exceptions raised by the parser (whose messages quote the
SQL) are dropped without chaining, and sqlglot's own log records are suppressed while the gate
parses. Use ``sql_sha256`` to correlate a query in audit logs.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel

from trace_platform.core import sql_gate_rules as rules

__all__ = [
    "MAX_AST_DEPTH",
    "MAX_BRACKET_DEPTH",
    "MAX_SQL_BYTES",
    "REASONS",
    "SqlRejected",
    "check_sql",
    "sql_sha256",
    "sql_shape",
]

MAX_SQL_BYTES = 100_000
"""Largest accepted query text, in UTF-8 bytes."""
MAX_BRACKET_DEPTH = 24
"""Deepest accepted nesting of ``()``, ``[]`` and ``{}`` (checked on tokens, before parsing)."""
MAX_AST_DEPTH = 256
"""Deepest accepted syntax tree (long operator chains nest without brackets)."""

REASONS: dict[str, str] = {
    "SQL_TOO_LARGE": "query text exceeds the size limit",
    "INVALID_CHARACTERS": "query text contains control, format or non-ASCII space characters",
    "EMPTY_QUERY": "query text contains no statement",
    "PARSE_ERROR": "query text could not be parsed",
    "NESTING_TOO_DEEP": "query nesting exceeds the depth limit",
    "MULTIPLE_STATEMENTS": "exactly one statement is allowed",
    "NOT_A_SELECT": "only read-only SELECT queries are allowed",
    "SELECT_INTO": "SELECT ... INTO is not allowed",
    "DISALLOWED_SYNTAX": "query uses syntax outside the allowlist",
    "DISALLOWED_FUNCTION": "query calls a function outside the allowlist",
    "TABLE_FUNCTION": "table functions are not allowed as relations",
    "STRING_RELATION": "file paths and URLs cannot be used as relations",
    "DISALLOWED_RELATION": "query references a relation outside the allowlist",
    "INTERNAL_ERROR": "query could not be verified",
}
"""Stable reason codes and their fixed, SQL-free descriptions."""


class SqlRejected(Exception):
    """The query was rejected. ``reason`` is a stable UPPER_SNAKE code from ``REASONS``.

    The message is ``"<REASON>: <fixed description>"`` and never contains user text. Inside
    the gate, ``function`` names a refused function; ``check_sql`` drops it (what leaves the
    gate never carries the caller's text), and only ``refused_function`` answers it: a
    client that has the SQL anyway (the CLI) shows its user which function it was.
    """

    def __init__(self, reason: str, function: str = "") -> None:
        if reason not in REASONS:
            reason = "INTERNAL_ERROR"
        super().__init__(f"{reason}: {REASONS[reason]}")
        self.reason: str = reason
        self.function = function

    def __reduce__(self) -> tuple[type[SqlRejected], tuple[str]]:
        return (SqlRejected, (self.reason,))


def sql_sha256(sql: str) -> str:
    """Hex SHA-256 of the UTF-8 query text, for audit records (raw SQL is never stored)."""
    return hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()


def check_sql(sql: str, *, allowed_relations: frozenset[str] = frozenset({"dataset"})) -> exp.Expr:
    """Raise ``SqlRejected`` unless ``sql`` is a single read-only query the gate can vouch for;
    return its syntax tree (read it, never execute a rendering of it: DuckDB runs the text).

    Relation names in ``allowed_relations`` are matched case-insensitively and unqualified.
    """
    root, failure, _ = _judge(sql, allowed_relations)
    if failure is not None:  # raised outside any handler: no chained parser exception
        raise SqlRejected(failure)
    assert root is not None
    return root


def refused_function(sql: str, *, allowed_relations: frozenset[str] = frozenset({"dataset"})) -> str:
    """The name of the function the gate refuses in ``sql`` (a plain identifier of at most
    64 characters), else "". For clients explaining a DISALLOWED_FUNCTION they were sent;
    servers never echo it."""
    _, failure, function = _judge(sql, allowed_relations)
    if failure != "DISALLOWED_FUNCTION" or not (len(function) <= 64 and rules.PLAIN_IDENTIFIER.fullmatch(function)):
        return ""
    return function


def _judge(sql: str, allowed_relations: frozenset[str]) -> tuple[exp.Expr | None, str | None, str]:
    """(tree, None, "") for an accepted query, else (None, reason, refused function or "")."""
    reason = _check_text(sql)
    if reason is not None:
        return None, reason, ""
    statements, tokens, reason = _parse(sql)
    if reason is not None:
        return None, reason, ""
    real = [s for s in statements if s is not None and not _is_empty_statement(s)]
    if not real:
        return None, "EMPTY_QUERY", ""
    if len(real) > 1:
        return None, "MULTIPLE_STATEMENTS", ""
    root = real[0]
    if type(root) not in rules.QUERY_ROOTS:
        return None, "NOT_A_SELECT", ""
    allowed = frozenset(name.lower() for name in allowed_relations)
    try:
        _check_written_calls(tokens, _check_tree(root, allowed))
    except SqlRejected as exc:
        return None, exc.reason, exc.function
    except RecursionError:
        return None, "NESTING_TOO_DEEP", ""
    except Exception:  # fail closed on anything unexpected while walking the tree
        return None, "INTERNAL_ERROR", ""
    return root, None, ""


def sql_shape(sql: str) -> str | None:
    """A key shared by texts the gate necessarily judges alike: the SHA-256 of the token
    sequence with the values of number literals masked. The parser builds the same tree for
    any number value and no check reads one, so an accepted shape stays accepted whatever
    its numbers (a point lookup by block number is gated once). String literals, identifiers
    comments and everything else stay verbatim. None when the text fails the text checks or does not
    tokenize: then only ``check_sql`` may decide. A plain text (``_plain_shape``) is keyed
    by its own characters with those number runs masked, a key space of its own.
    """
    if _check_text(sql) is not None:
        return None
    return _plain_shape(sql) or _token_shape(sql)


def _token_shape(sql: str) -> str | None:
    quiet = _QUIET.set(True)
    try:
        tokens = _DIALECT.tokenize(sql)
    except Exception:
        return None
    finally:
        _QUIET.reset(quiet)
    # repr of a list of (str, str, list[str]) tuples is unambiguous: equal keys, equal tokens.
    key = repr([(_TOKEN_NAMES[t.token_type], "" if t.token_type is _NUMBER else t.text, t.comments) for t in tokens])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# A text of plain ASCII without quotes of any kind, comments, dollar signs or backslashes
# holds no string, quoted identifier or comment, so each maximal run of digits (with one
# decimal point inside or before it) that touches no identifier character, further "." or
# parameter sigil is a number literal token as it stands,
# and masking those runs in the text itself gives the masked token sequence's key without
# the tokenizer (~0.1 ms less per new point lookup). Anything else takes the tokenizer.
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_ \t\r\n(),.*=<>!+\-/%|&^~:;\[\]{}]*")
_PLAIN_NUMBER = re.compile(r"(?<![A-Za-z0-9_.:@?$#])(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?![A-Za-z0-9_.])")


def _plain_shape(sql: str) -> str | None:
    if not sql.isascii() or "--" in sql or "/*" in sql or _PLAIN_TEXT.fullmatch(sql) is None:
        return None
    masked = _PLAIN_NUMBER.sub("0", sql)
    return hashlib.sha256(b"plain\x00" + masked.encode()).hexdigest()


# --- text and parsing ------------------------------------------------------------------------

_DIALECT = Dialect.get_or_raise("duckdb")
_GENERATOR = _DIALECT.generator(unsupported_level=ErrorLevel.IGNORE)
# Render budget per check, in characters: ~20 renderings of the largest accepted text.
_RENDER_BUDGET = 20 * MAX_SQL_BYTES
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_CALL = re.compile(r'(?:"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_$]*))\s*\(')
_TOKEN_NAMES = {t: t.name for t in TokenType}
_NUMBER = TokenType.NUMBER
_TYPE_TOKENS = frozenset(_DIALECT.parser_class.TYPE_TOKENS) - {TokenType.VAR, TokenType.IDENTIFIER}
_OPENERS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE})
_CLOSERS = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE})
_QUIET: ContextVar[bool] = ContextVar("trace_sql_gate_quiet", default=False)


class _QuietWhileGating(logging.Filter):
    """Drops sqlglot log records emitted while the gate parses: they quote the SQL text."""

    trace_sql_gate = True

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


def _install_log_filter() -> None:
    logger = logging.getLogger("sqlglot")  # every sqlglot module logs through this logger
    for old in list(logger.filters):
        if getattr(old, "trace_sql_gate", False):
            logger.removeFilter(old)
    logger.addFilter(_QuietWhileGating())


_install_log_filter()


_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Control (Cc), format (Cf), surrogate (Cs) and line/paragraph separator characters, and every
# space but U+0020: sqlglot treats some of these as whitespace where DuckDB reads them as part
# of an identifier (U+0085, U+00A0, U+2028, ...), so the two parsers could disagree.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})


def _check_text(sql: object) -> str | None:
    if not isinstance(sql, str):
        return "INVALID_CHARACTERS"
    if len(sql) > MAX_SQL_BYTES:
        return "SQL_TOO_LARGE"
    if _ASCII_CONTROLS.search(sql) or not (sql.isascii() or _non_ascii_ok(sql)):
        return "INVALID_CHARACTERS"
    if len(sql.encode("utf-8")) > MAX_SQL_BYTES:
        return "SQL_TOO_LARGE"
    if not sql.strip():
        return "EMPTY_QUERY"
    return None


def _non_ascii_ok(sql: str) -> bool:
    return not any(char > "\x7f" and unicodedata.category(char) in _REFUSED_CATEGORIES for char in sql)


def _bracket_depth(tokens: Iterable[Token]) -> int:
    depth = deepest = 0
    for token in tokens:
        if token.token_type in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type in _CLOSERS:
            depth -= 1
    return deepest


def _parse(sql: str) -> tuple[list[exp.Expr | None], list[Token], str | None]:
    """Tokenize and parse exactly as ``sqlglot.parse(sql, read="duckdb")`` does, quietly."""
    quiet = _QUIET.set(True)
    try:
        tokens = _DIALECT.tokenize(sql)
        if _bracket_depth(tokens) > MAX_BRACKET_DEPTH:
            return [], [], "NESTING_TOO_DEEP"
        return _DIALECT.parser(error_level=ErrorLevel.IMMEDIATE).parse(tokens, sql), tokens, None
    except RecursionError:
        return [], [], "NESTING_TOO_DEEP"
    except Exception:  # ParseError, TokenError or anything else: the text is not trusted
        return [], [], "PARSE_ERROR"
    finally:
        _QUIET.reset(quiet)


def _is_empty_statement(node: exp.Expr) -> bool:
    """sqlglot turns a stray ``;`` (optionally with comments) into an empty Semicolon node."""
    return type(node) is exp.Semicolon and next(node.iter_expressions(), None) is None


# --- tree walk ---------------------------------------------------------------------------------

_Frame = tuple[exp.Expr, frozenset[str], int]


def _check_tree(root: exp.Expr, allowed: frozenset[str]) -> Counter[str]:
    """Iterative walk over every node, tracking which CTE names are visible where; returns
    the names of the aliases with a column list."""
    stack: list[_Frame] = [(root, frozenset(), 1)]
    calls = _Calls()
    while stack:
        node, scope, depth = stack.pop()
        if depth > MAX_AST_DEPTH:
            raise SqlRejected("NESTING_TOO_DEEP")
        _check_node(node, scope, allowed, calls)
        with_clause = next((v for v in node.args.values() if isinstance(v, exp.With)), None)
        inner = scope
        if with_clause is not None:
            inner = _push_ctes(with_clause, scope, depth + 1, stack)
        for child in node.iter_expressions():
            if child is not with_clause:
                stack.append((child, inner, depth + 1))
    return calls.aliases


def _push_ctes(with_clause: exp.Expr, scope: frozenset[str], depth: int, stack: list[_Frame]) -> frozenset[str]:
    """Queue the CTE bodies with the names visible to each; return the scope after WITH.

    A CTE sees the CTEs defined before it and, under WITH RECURSIVE, itself.
    """
    if depth > MAX_AST_DEPTH:
        raise SqlRejected("NESTING_TOO_DEEP")
    _check_node(with_clause, scope, frozenset(), _Calls())
    recursive = bool(with_clause.args.get("recursive"))
    visible = scope
    for child in with_clause.iter_expressions():
        if type(child) is not exp.CTE:
            stack.append((child, scope, depth + 1))
            continue
        alias = child.args.get("alias")
        ident = alias.this if isinstance(alias, exp.TableAlias) else None
        if not isinstance(ident, exp.Identifier):
            raise SqlRejected("DISALLOWED_SYNTAX")
        name = _relation_key(ident.name)
        if _is_reserved(name):
            raise SqlRejected("DISALLOWED_RELATION")
        stack.append((child, visible | {name} if recursive else visible, depth + 1))
        visible = visible | {name}
    return visible


def _check_node(node: exp.Expr, scope: frozenset[str], allowed: frozenset[str], calls: _Calls) -> None:
    kind = type(node)
    if kind is exp.Table:
        _check_table(node, scope, allowed)
    elif kind is exp.Into:
        raise SqlRejected("SELECT_INTO")
    elif kind is exp.And or kind is exp.Or:
        pass  # Func subclasses, yet plain operators; rendering each link of a chain is quadratic
    elif isinstance(node, exp.Func):
        _check_function(node, calls)
    elif kind in rules.SYNTAX_NODES:
        if kind is exp.Column:
            _check_column(node)
        elif kind is exp.TableAlias and node.args.get("columns"):
            calls.aliases[node.name.lower()] += 1  # t(a, b) is written like a call
        elif kind is exp.Select and not node.expressions:
            raise SqlRejected("PARSE_ERROR")  # sqlglot accepts a bare SELECT; DuckDB does not
    else:
        raise SqlRejected("DISALLOWED_SYNTAX")


def _check_function(node: exp.Func, calls: _Calls) -> None:
    parent = node.parent
    if node.arg_key == "this" and isinstance(parent, exp.Table | exp.Lateral | exp.From | exp.Join):
        raise SqlRejected("TABLE_FUNCTION")
    if isinstance(parent, exp.Dot) and node.arg_key == "expression":
        raise SqlRejected("DISALLOWED_FUNCTION")  # x.f() method syntax or schema.f() calls
    names = calls.own(node)
    if not names:  # an operator, keyword or literal form: only the reviewed ones
        if type(node) not in rules.SYNTAX_FUNCTIONS and type(node) not in rules.SYNTAX_NODES:
            raise SqlRejected("DISALLOWED_FUNCTION")
        return
    for name in names:
        if name not in rules.FUNCTION_NAMES and name not in rules.SYNTAX_CALLS:
            raise SqlRejected("DISALLOWED_FUNCTION", name)
        if name in rules.AGGREGATE_BY_NAME:
            _check_aggregate_named(node)


def _check_aggregate_named(node: exp.Func) -> None:
    """``list_aggregate(list, 'name', ...)`` calls the aggregate its string names."""
    args = node.expressions if type(node) is exp.Anonymous else []
    named = args[1] if len(args) > 1 else None
    if not (isinstance(named, exp.Literal) and named.is_string):
        raise SqlRejected("DISALLOWED_FUNCTION")
    name = named.this
    if not (rules.PLAIN_IDENTIFIER.fullmatch(name) and name.lower() in rules.AGGREGATE_FUNCTIONS):
        raise SqlRejected("DISALLOWED_FUNCTION")


class _Calls:
    """The names of the functions sqlglot *generates* for DuckDB, per node.

    A node's own calls are those in its DuckDB rendering that its children's renderings do
    not account for: ``LowerHex`` renders ``LOWER(HEX(x))`` over ``x`` and so calls ``lower``
    and ``hex``. Renderings are kept per node for one check; their total size is bounded
    (deep nesting renders a subtree once per enclosing call).
    """

    def __init__(self) -> None:
        self.aliases: Counter[str] = Counter()
        self._rendered: dict[int, str] = {}
        self._budget = _RENDER_BUDGET

    def own(self, node: exp.Expr) -> Counter[str]:
        rendered = self._render(node)
        if rules.PLAIN_IDENTIFIER.fullmatch(rendered):
            return Counter([rendered.lower()])  # a keyword call without brackets: CURRENT_DATE
        names = _call_names(rendered)
        for child in node.iter_expressions():
            names.subtract(_call_names(self._render(child)))
        return +names  # drops what children account for (and anything rendered differently)

    def _render(self, node: exp.Expr) -> str:
        key = id(node)  # the tree outlives this object: ids stay unique
        text = self._rendered.get(key)
        if text is None:
            text = _GENERATOR.sql(node)
            self._budget -= len(text)
            if self._budget < 0:
                raise SqlRejected("NESTING_TOO_DEEP")
            self._rendered[key] = text
        return text


def _call_names(rendered: str) -> Counter[str]:
    text = _STRING_LITERAL.sub("''", rendered)
    names: Counter[str] = Counter()
    for quoted, bare in _CALL.findall(text):
        if quoted:
            names[quoted.replace('""', '"').lower()] += 1  # a quoted "in"(...) is a call
        elif bare.lower() not in rules.RENDER_KEYWORDS:  # "AND (", "IN (", "OVER ("
            names[bare.lower()] += 1
    return names


def _check_written_calls(tokens: list[Token], aliases: Counter[str]) -> None:
    """Every word written before "(" is an allowlisted DuckDB function, a keyword, a type or
    an alias with a column list. DuckDB runs the text, not sqlglot's reading of it: a name
    sqlglot translates into allowlisted calls (``gen_random_uuid(x, 'y')`` becomes a SHA1
    expression) is still the name DuckDB calls."""
    for word, after in itertools.pairwise(tokens):
        if after.token_type is not TokenType.L_PAREN:
            continue
        quoted = word.token_type is TokenType.IDENTIFIER
        if not quoted and (word.token_type in _TYPE_TOKENS or not rules.PLAIN_IDENTIFIER.fullmatch(word.text)):
            continue  # DECIMAL(10, 2), a closing bracket, a literal
        name = word.text.lower()
        if name in rules.FUNCTION_NAMES or (not quoted and name in rules.RENDER_KEYWORDS | rules.SYNTAX_CALLS):
            continue
        if aliases[name] > 0:  # FROM dataset t(a, b), WITH c(x) AS (...)
            aliases[name] -= 1
            continue
        raise SqlRejected("DISALLOWED_FUNCTION", name)


def _check_column(node: exp.Expr) -> None:
    ident = node.this
    if (
        node.args.get("table") is None
        and isinstance(ident, exp.Identifier)
        and ident.name.lower() in rules.KEYWORD_FUNCTION_COLUMNS
        and not (ident.quoted and ident.name.lower() in _defined_names(node.root()))
    ):
        # e.g. bare CURRENT_SCHEMA, USER. Quoted too: DuckDB binds an unqualified
        # "current_user" to the function when no column has that name, so a quoted one is
        # accepted only when the query itself names a column so (AS "user", t("user"));
        # a dataset's column of that name is reachable qualified (t."user").
        raise SqlRejected("DISALLOWED_FUNCTION")


def _defined_names(root: exp.Expr) -> frozenset[str]:
    """Column names the query itself defines: output aliases and column lists."""
    names: set[str] = set()
    for node in root.walk():
        if isinstance(node, exp.Alias):
            names.add(node.alias.lower())
        elif isinstance(node, exp.TableAlias):
            names.update(c.name.lower() for c in node.columns)
    return frozenset(names)


def _check_table(node: exp.Expr, scope: frozenset[str], allowed: frozenset[str]) -> None:
    target = node.this
    if isinstance(target, exp.Func):
        raise SqlRejected("TABLE_FUNCTION")
    if not isinstance(target, exp.Identifier):
        raise SqlRejected("DISALLOWED_RELATION")
    name = _relation_key(target.name)
    if node.args.get("db") is not None or node.args.get("catalog") is not None:
        raise SqlRejected("DISALLOWED_RELATION")
    if name in allowed:
        return
    if _is_reserved(name) or name not in scope:
        raise SqlRejected("DISALLOWED_RELATION")


def _relation_key(name: str) -> str:
    """Validate a relation or CTE name and return its case-folded lookup key."""
    if any(char in rules.PATH_CHARACTERS for char in name):
        raise SqlRejected("STRING_RELATION")  # FROM 'x.csv', FROM "s3://...", FROM 'a/b'
    if not rules.PLAIN_IDENTIFIER.fullmatch(name):
        raise SqlRejected("DISALLOWED_RELATION")
    return name.lower()


def _is_reserved(name: str) -> bool:
    return name in rules.RESERVED_RELATION_NAMES or name.startswith(rules.RESERVED_RELATION_PREFIXES)
