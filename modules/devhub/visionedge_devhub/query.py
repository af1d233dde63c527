"""The subset of the IoT Hub query language that deployment target conditions and metric queries use.

    SELECT * | SELECT path [AS name], ... | SELECT COUNT() AS name   FROM devices | devices.modules   [WHERE cond]
    cond:  a OR b, a AND b, NOT a, (a), path op literal (= != <> < > <= >=), path [NOT] IN [lit, ...],
           IS_DEFINED(path), NOT_IS_DEFINED(path); a target condition is a bare cond, or '*' for every device
    path:  dotted names, with [[any text]] for names that dots would split (configurations.[[my-id]].status)
    literal: 'text' ('' escapes a quote), numbers, true, false, null

A property that is not there makes every comparison false, as in IoT Hub. A configuration's target condition is
narrower (`parse_target_condition`): IoT Hub refuses `IN` there (InvalidConfigurationTargetCondition) and any path
but deviceId, tags and properties.reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

_MISSING = object()
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<op><=|>=|!=|<>|[=<>(),\[\]*])"
    r"|(?P<path>(?:\[\[.*?\]\]|[A-Za-z_$][A-Za-z0-9_$]*)(?:\.(?:\[\[.*?\]\]|[A-Za-z_$][A-Za-z0-9_$]*))*))"
)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "AS", "TRUE", "FALSE", "NULL"}
_FUNCTIONS = {"IS_DEFINED", "NOT_IS_DEFINED"}
SOURCES = ("devices", "devices.modules")


class QueryError(ValueError):
    """The query is outside the supported language; the message says where."""


@dataclass(frozen=True)
class Query:
    """A parsed SELECT: which twins (`source`), which rows (`where`), and what of each row to return."""

    source: str
    where: Predicate
    projection: tuple[tuple[tuple[str, ...], str], ...] | None
    """(path, output name) per selected item; None for `SELECT *`."""
    count_as: str | None

    def run(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Apply the query to twins of its source; COUNT() gives one row."""
        matched = [row for row in rows if self.where(row)]
        if self.count_as is not None:
            return [{self.count_as: len(matched)}]
        if self.projection is None:
            return [dict(row) for row in matched]
        out = []
        for row in matched:
            item: dict[str, Any] = {}
            for path, name in self.projection:
                value = lookup(row, path)
                if value is not _MISSING:
                    item[name] = value
            out.append(item)
        return out


def lookup(row: Any, path: tuple[str, ...]) -> Any:
    """The value at a path in a twin, or _MISSING."""
    node = row
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _split_path(text: str) -> tuple[str, ...]:
    """`a.[[b.c]].d` -> ('a', 'b.c', 'd')."""
    return tuple(part[2:-2] if part.startswith("[[") else part for part in re.findall(r"\[\[.*?\]\]|[^.]+", text))


class _Parser:
    """Recursive descent over the token list."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise QueryError(f"cannot read the query at {text[pos:pos + 20]!r}")
            kind = match.lastgroup or ""
            value = match.group(kind)
            if kind == "path" and value.upper() in _KEYWORDS | _FUNCTIONS:
                kind, value = "kw", value.upper()
            self.tokens.append((kind, value))
            pos = match.end()
        self.pos = 0
        self.paths: list[tuple[str, ...]] = []
        """Every property path a condition reads, in order."""
        self.uses_in = False

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        got_kind, got_value = self.peek()
        if got_kind != kind or (value is not None and got_value != value):
            want = value or kind
            raise QueryError(f"expected {want} but found {got_value or 'the end'!r} in {self.text!r}")
        self.pos += 1
        return got_value

    def accept(self, kind: str, value: str) -> bool:
        if self.peek() == (kind, value):
            self.pos += 1
            return True
        return False

    def done(self) -> None:
        if self.pos != len(self.tokens):
            raise QueryError(f"unexpected {self.peek()[1]!r} in {self.text!r}")

    # ---- conditions -----------------------------------------------------------------------------------------

    def condition(self) -> Predicate:
        left = self.conjunction()
        while self.accept("kw", "OR"):
            right = self.conjunction()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def conjunction(self) -> Predicate:
        left = self.negation()
        while self.accept("kw", "AND"):
            right = self.negation()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def negation(self) -> Predicate:
        if self.accept("kw", "NOT"):
            inner = self.negation()
            return lambda row: not inner(row)
        return self.primary()

    def primary(self) -> Predicate:
        if self.accept("op", "("):
            inner = self.condition()
            self.take("op", ")")
            return inner
        kind, value = self.peek()
        if kind == "kw" and value in _FUNCTIONS:
            self.pos += 1
            self.take("op", "(")
            path = self.path()
            self.take("op", ")")
            defined = value == "IS_DEFINED"
            return lambda row: (lookup(row, path) is not _MISSING) == defined
        path = self.path()
        negate = self.accept("kw", "NOT")
        if negate or self.peek() == ("kw", "IN"):
            self.take("kw", "IN")
            self.uses_in = True
            options = self.literal_list()
            return lambda row: _in(lookup(row, path), options) != negate
        op = self.take("op")
        if op not in _COMPARE:
            raise QueryError(f"unsupported operator {op!r} in {self.text!r}")
        literal = self.literal()
        compare = _COMPARE[op]
        return lambda row: _compare(lookup(row, path), literal, compare)

    def path(self) -> tuple[str, ...]:
        path = _split_path(self.take("path"))
        self.paths.append(path)
        return path

    def literal_list(self) -> list[Any]:
        self.take("op", "[")
        values = [self.literal()]
        while self.accept("op", ","):
            values.append(self.literal())
        self.take("op", "]")
        return values

    def literal(self) -> Any:
        kind, value = self.peek()
        self.pos += 1
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "kw" and value in ("TRUE", "FALSE"):
            return value == "TRUE"
        if kind == "kw" and value == "NULL":
            return None
        raise QueryError(f"expected a value ('text', a number, true, false, null) but found {value!r} "
                         f"in {self.text!r}")

    # ---- SELECT ---------------------------------------------------------------------------------------------

    def select(self) -> Query:
        self.take("kw", "SELECT")
        projection: list[tuple[tuple[str, ...], str]] | None = []
        count_as = None
        if self.accept("op", "*"):
            projection = None
        elif self.peek() == ("path", "COUNT") or self.peek() == ("path", "count"):
            self.pos += 1
            self.take("op", "(")
            self.take("op", ")")
            count_as = self.take("path") if self.accept("kw", "AS") else "$1"
        else:
            while True:
                text = self.take("path")
                name = self.take("path") if self.accept("kw", "AS") else _split_path(text)[-1]
                assert projection is not None
                projection.append((_split_path(text), name))
                if not self.accept("op", ","):
                    break
        self.take("kw", "FROM")
        source = self.take("path")
        if source not in SOURCES:
            raise QueryError(f"unsupported collection {source!r}: use {' or '.join(SOURCES)}")
        where: Predicate = lambda row: True  # noqa: E731 - the absent WHERE
        if self.accept("kw", "WHERE"):
            where = self.condition()
        self.done()
        return Query(source, where, tuple(projection) if projection is not None else None, count_as)


def _in(value: Any, options: list[Any]) -> bool:
    """`IN`: equal to one of the options (a missing property is in nothing)."""
    return value is not _MISSING and any(_compare(value, option, _COMPARE["="]) for option in options)


def _compare(value: Any, literal: Any, compare: Callable[[Any, Any], bool]) -> bool:
    """Compare like IoT Hub: missing or differently typed values never match (numbers compare across int/float)."""
    if value is _MISSING:
        return False
    numbers = (int, float)
    same_kind = (isinstance(value, numbers) and isinstance(literal, numbers)
                 and not isinstance(value, bool) and not isinstance(literal, bool)) or type(value) is type(literal)
    if not same_kind:
        return False
    try:
        return compare(value, literal)
    except TypeError:
        return False


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b),
    "<=": lambda a, b: bool(a <= b),
    ">=": lambda a, b: bool(a >= b),
}
_COMPARE["<>"] = _COMPARE["!="]


def parse_query(text: str) -> Query:
    """Parse a full SELECT statement; raises QueryError."""
    return _Parser(text).select()


TARGET_ROOTS = ("deviceId", "tags", "properties.reported")


def parse_target_condition(text: str) -> Predicate:
    """Parse a configuration's target condition as IoT Hub accepts it: no IN, only deviceId, tags and reported
    properties (the hub's words: "a filter condition based on 'deviceId', 'tags', or 'properties.reported'")."""
    if text.strip() == "*":
        return lambda row: True
    parser = _Parser(text)
    predicate = parser.condition()
    parser.done()
    if parser.uses_in:
        raise QueryError(f"IN is not accepted in a target condition (write a = 'x' OR a = 'y'): {text!r}")
    for path in parser.paths:
        if not any(".".join(path) == root or ".".join(path).startswith(root + ".") for root in TARGET_ROOTS):
            raise QueryError(f"a target condition must be based on deviceId, tags or properties.reported, not "
                             f"{'.'.join(path)!r}")
    return predicate


def parse_condition(text: str) -> Predicate:
    """Parse a target condition (a WHERE clause on its own, or '*' for every device); raises QueryError."""
    if text.strip() == "*":
        return lambda row: True
    parser = _Parser(text)
    predicate = parser.condition()
    parser.done()
    return predicate
