"""Allowlists for the SQL gate (see ``sql_gate.py`` and ``docs/sql_gate.md``).

Everything here is an *allowlist*: a node type, function or relation that is not listed is
rejected. Functions are listed once, by their DuckDB names; sqlglot classes are listed only
for syntax (query shapes, operators, literals). Class names are resolved against
``sqlglot.expressions`` at import time so that a sqlglot upgrade that renames or drops a
class makes the gate stricter, never looser (``tests/unit/test_sql_gate.py`` checks that
every listed name still resolves).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlglot import exp


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Structural (non-function) expression classes a read-only query may contain, one group per
# line: query shapes, references and literals, types, window/aggregate modifiers, operators
# and predicates, JSON path pieces (produced by ->, ->> and json_extract*).
SYNTAX_NODE_NAMES: frozenset[str] = _words(
    """
    Select Union Intersect Except Subquery With CTE TableAlias From Join Lateral Table Where
        Group Having Qualify Order Ordered Limit LimitOptions Offset Distinct Rollup Cube
        GroupingSets
    Column Identifier Dot Star Literal Null Boolean Var Alias Paren Tuple Bracket Slice
        PropertyEQ
    DataType DataTypeParam ColumnDef Interval
    Window WindowSpec Filter WithinGroup IgnoreNulls RespectNulls
    And Or Not Neg EQ NEQ GT GTE LT LTE NullSafeEQ NullSafeNEQ Is In Between Like ILike Glob
        SimilarTo Escape Any All Add Sub Mul Div IntDiv Mod DPipe BitwiseAnd BitwiseOr
        BitwiseXor BitwiseNot BitwiseLeftShift BitwiseRightShift
    JSONPath JSONPathRoot JSONPathKey JSONPathSubscript JSONKeyValue Lambda AtTimeZone
    """
)

# Syntax sqlglot types as a function although DuckDB spells it as an operator, keyword or
# literal (``CASE``, ``[1, 2]``, ``{'a': 1}``, ``->``, ``XOR``): the one place a class
# decides, and only for a node whose DuckDB rendering calls no function of its own.
SYNTAX_FUNCTION_NAMES: frozenset[str] = _words(
    "Case If Struct Array JSONExtract JSONExtractScalar ArrayOverlaps DateAdd DateSub"
)

# Keyword forms DuckDB spells like a call; no catalogue function has these names.
SYNTAX_CALLS: frozenset[str] = _words("cast try_cast extract exists")
# Keywords a rendering may put before "(" that are no call (``a AND (b)``, ``x IN (1)``,
# ``OVER (...)``). None is a DuckDB function name (checked against the catalogue).
RENDER_KEYWORDS: frozenset[str] = _words(
    """
    and or not in any all some over as on using from where when then else case end is like
    ilike between select union intersect except join lateral within group by order partition
    rows distinct exclude rollup cube sets interval lambda escape to zone limit offset qualify
    having with recursive
    """
)

# The function allowlist, stated once in DuckDB's own names (``duckdb_functions()``). The
# gate checks the names sqlglot *generates* for DuckDB, never sqlglot's classes, so
# ``lower(hex(x))`` (sqlglot: ``LowerHex``) is ``lower`` and ``hex``. Every entry must be a
# built-in scalar, aggregate, window or macro function of that kind with no side effect and
# no host, file, catalog or settings access: tests/unit/test_sql_gate_catalogue.py checks
# each against DuckDB's catalogue and a denylist.
AGGREGATE_FUNCTIONS: frozenset[str] = _words(
    """
    count count_if countif sum avg mean min max approx_count_distinct approx_quantile
    approx_top_k reservoir_quantile stddev stddev_pop stddev_samp variance var_pop var_samp
    median mode mad quantile quantile_cont quantile_disc percentile_cont percentile_disc
    arg_min arg_max argmin argmax min_by max_by string_agg group_concat listagg list array_agg
    bool_and bool_or bit_and bit_or
    bit_xor first last any_value arbitrary product corr covar_pop covar_samp entropy kurtosis
    skewness histogram fsum sumkahan kahan_sum favg json_group_array json_group_object
    regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
    """
)
WINDOW_FUNCTIONS: frozenset[str] = _words(
    "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
)
SCALAR_FUNCTIONS: frozenset[str] = _words(
    """
    abs ceil ceiling floor round trunc sign sqrt cbrt pow power exp ln log log2 log10 mod
    greatest least pi degrees radians sin cos tan asin acos atan atan2 isnan isinf isfinite
    gcd lcm even xor bit_count
    lower upper lcase ucase length len char_length character_length octet_length strlen
    bit_length concat concat_ws substring substr left right lpad rpad trim ltrim rtrim replace
    reverse repeat position strpos instr starts_with ends_with contains split_part
    string_split str_split string_split_regex str_split_regex translate format printf ascii chr ord levenshtein
    jaro_winkler_similarity prefix suffix regexp_matches regexp_extract regexp_extract_all
    regexp_replace regexp_full_match regexp_split_to_array md5 md5_number sha1 sha256 hash hex
    unhex to_hex from_hex bin to_binary from_binary to_base64 from_base64 base64 encode decode
    format_bytes editdist3 split string_to_array
    date_trunc datetrunc date_part datepart date_diff datediff date_sub date_add epoch epoch_ms
    epoch_us epoch_ns to_timestamp make_date make_timestamp make_time strftime strptime
    try_strptime year month day hour minute second millisecond microsecond dayofweek isodow
    weekday dayofyear week weekofyear yearweek quarter isoyear decade century last_day age
    now today current_date current_timestamp time_bucket timezone to_days to_hours to_minutes
    to_seconds to_milliseconds to_microseconds date dayname monthname
    coalesce nullif ifnull typeof if
    list_value list_pack array_value list_extract list_element array_length list_contains
    list_has array_contains array_has list_has_any list_has_all list_sort array_sort
    list_reverse_sort array_reverse_sort list_distinct array_distinct list_unique list_reverse
    list_slice array_slice list_position array_position list_indexof list_concat list_cat
    array_concat array_cat list_zip list_select list_where list_grade_up array_to_string
    flatten unnest range generate_series struct_pack struct_extract struct_insert
    list_sum list_avg list_min list_max list_count list_first list_last list_any_value
    list_transform list_apply array_transform array_apply apply list_filter array_filter filter
    list_reduce array_reduce reduce list_aggregate array_aggregate list_aggr array_aggr aggregate
    json json_extract json_extract_string json_extract_path json_extract_path_text
    json_array_length json_type json_valid json_keys json_value json_exists json_contains
    json_object json_array to_json json_merge_patch
    """
)
FUNCTION_NAMES: frozenset[str] = AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS | SCALAR_FUNCTIONS

# Functions whose second argument names the aggregate they call: it must be a string
# literal naming an allowlisted aggregate, or the call is refused.
AGGREGATE_BY_NAME: frozenset[str] = _words("list_aggregate array_aggregate list_aggr array_aggr aggregate")

# Bare words DuckDB evaluates as functions although sqlglot parses them as columns, quoted
# or not, when no column of the query has that name (refused unless qualified).
KEYWORD_FUNCTION_COLUMNS: frozenset[str] = _words(
    "user current_user session_user current_role current_schema current_catalog"
)

# Relation names are plain ASCII identifiers; system-looking names are never resolved, even
# when a CTE of that name is in scope.
PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PATH_CHARACTERS: frozenset[str] = frozenset("/.:\\*?~")
RESERVED_RELATION_PREFIXES: tuple[str, ...] = tuple(sorted(_words("duckdb_ pg_ sqlite_ pragma_ information_schema")))
RESERVED_RELATION_NAMES: frozenset[str] = _words("system temp main memory")

# Top-level statement classes accepted as "a query".
QUERY_ROOT_NAMES: frozenset[str] = _words("Select Union Intersect Except Subquery")


def resolve_classes(names: Iterable[str]) -> frozenset[type[exp.Expr]]:
    """Map class names to ``sqlglot.expressions`` classes, silently dropping unknown ones."""
    found: set[type[exp.Expr]] = set()
    for name in names:
        cls = getattr(exp, name, None)
        if isinstance(cls, type) and issubclass(cls, exp.Expr):
            found.add(cls)
    return frozenset(found)


SYNTAX_NODES: frozenset[type[exp.Expr]] = resolve_classes(SYNTAX_NODE_NAMES)
SYNTAX_FUNCTIONS: frozenset[type[exp.Expr]] = resolve_classes(SYNTAX_FUNCTION_NAMES)
QUERY_ROOTS: frozenset[type[exp.Expr]] = resolve_classes(QUERY_ROOT_NAMES)
