"""Allowlists for the SQL gate (see ``sql_gate.py`` and ``docs/sql_gate.md``).

Everything here is an *allowlist*: a node type, function or relation that is not listed is
rejected. Class names are resolved against ``sqlglot.expressions`` at import time so that a
sqlglot upgrade that renames or drops a class makes the gate stricter, never looser
(``tests/unit/test_sql_gate.py`` checks that every listed name still resolves).
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
    JSONPath JSONPathRoot JSONPathKey JSONPathSubscript
    """
)

# Typed sqlglot function classes (``exp.Func`` subclasses) that map to harmless DuckDB
# scalar / aggregate / window functions or expression syntax.
FUNCTION_CLASS_NAMES: frozenset[str] = _words(
    """
    Case If Cast TryCast Extract Exists Coalesce Nullif Greatest
    Least Array Struct StructExtract Explode Xor
    Count CountIf Sum Avg Min Max ApproxDistinct ApproxQuantile
    Stddev StddevPop StddevSamp Variance VariancePop Median Mode
    Quantile PercentileCont PercentileDisc ArgMin ArgMax GroupConcat
    ArrayAgg LogicalAnd LogicalOr BitwiseAndAgg BitwiseOrAgg BitwiseXorAgg
    First Last AnyValue Corr CovarPop CovarSamp Kurtosis Skewness
    RowNumber Rank DenseRank PercentRank CumeDist Ntile Lag Lead
    FirstValue LastValue NthValue
    Abs Ceil Floor Round Trunc Sign Sqrt Cbrt Pow Exp Ln
    Log Pi Degrees Radians Sin Cos Tan Asin Acos Atan Atan2
    IsNan IsInf Rand
    Lower Upper Length BitLength Concat ConcatWs Substring Left
    Right Pad Trim Replace Reverse Repeat StrPosition StartsWith
    EndsWith Contains SplitPart Split Translate Format Ascii Chr
    Levenshtein JarowinklerSimilarity RegexpLike RegexpExtract RegexpReplace
    RegexpFullMatch MD5 SHA SHA2 Hex Unhex ToBase64 FromBase64
    Encode Decode
    TimestampTrunc DateTrunc DateDiff DateAdd TimeToUnix UnixToTime
    DateFromParts TimestampFromParts TimeFromParts TimeToStr StrToTime Year
    Month Day Hour Minute Second DayOfWeek DayOfWeekIso DayOfYear
    Week Quarter LastDay CurrentDate CurrentTimestamp DateBin ToDays
    Date Dayname Monthname
    ArraySize ArrayContains ArraySort ArrayDistinct ArrayToString Flatten
    ArrayConcat JSONExtract JSONExtractScalar
    """
)

# DuckDB function names accepted when sqlglot leaves a call untyped (``exp.Anonymous``).
# It also lists the DuckDB names behind the typed classes above, so the gate keeps working
# if a sqlglot release stops typing one of them. Every entry must be a built-in DuckDB
# scalar, aggregate or window function that touches neither the host nor the catalog.
FUNCTION_NAMES: frozenset[str] = _words(
    """
    count count_if countif sum avg mean min max approx_count_distinct approx_quantile stddev
    stddev_pop stddev_samp variance var_pop var_samp median mode quantile quantile_cont
    quantile_disc arg_min arg_max argmin argmax min_by max_by string_agg group_concat listagg
    list array_agg bool_and bool_or bit_and bit_or bit_xor first last any_value product corr
    covar_pop covar_samp entropy kurtosis skewness histogram
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
    nth_value
    abs ceil ceiling floor round trunc sign sqrt cbrt pow power exp ln log log2 log10 mod
    greatest least pi degrees radians sin cos tan asin acos atan atan2 isnan isinf isfinite
    gcd lcm even random xor
    lower upper lcase ucase length len char_length character_length octet_length strlen
    bit_length concat concat_ws substring substr left right lpad rpad trim ltrim rtrim replace
    reverse repeat position strpos instr starts_with ends_with contains split_part
    string_split str_split translate format printf ascii chr levenshtein
    jaro_winkler_similarity prefix suffix regexp_matches regexp_extract regexp_replace
    regexp_full_match regexp_split_to_array md5 md5_number sha1 sha256 hash hex unhex to_hex
    from_hex to_base64 from_base64 base64 encode decode
    date_trunc date_part datepart date_diff datediff date_sub date_add epoch epoch_ms
    epoch_us epoch_ns to_timestamp make_date make_timestamp make_time strftime strptime
    try_strptime year month day hour minute second millisecond microsecond dayofweek isodow
    dayofyear week yearweek quarter last_day age now today current_date current_timestamp
    time_bucket to_days to_hours to_minutes to_seconds date dayname monthname
    coalesce nullif ifnull typeof
    list_value list_extract list_element array_length list_contains list_has array_contains
    list_sort list_distinct list_unique list_reverse list_slice list_position list_concat
    array_concat list_aggregate array_to_string flatten unnest struct_pack struct_extract
    json_extract json_extract_string json_array_length
    array_cat array_distinct array_has array_sort array_reverse_sort list_reverse_sort datetrunc
    editdist3 if json_extract_path json_extract_path_text split string_to_array
    """
)

# Unquoted bare words DuckDB evaluates as functions although sqlglot parses them as columns.
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
FUNCTION_CLASSES: frozenset[type[exp.Expr]] = resolve_classes(FUNCTION_CLASS_NAMES)
QUERY_ROOTS: frozenset[type[exp.Expr]] = resolve_classes(QUERY_ROOT_NAMES)
