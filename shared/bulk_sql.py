"""Batch-sized SQL: rows travel as COPY text or as one array literal per column
(`unnest`), not as the VALUES text psycopg2's execute_values builds, which cost more to format and for
the server to parse than the inserts themselves."""
from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

import orjson
import psycopg2

# COPY text format: backslash escapes; \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _array_item(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bytes | memoryview):
        return '"\\\\x' + bytes(v).hex() + '"'
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime | date):
        return '"' + v.isoformat() + '"'
    if isinstance(v, list | tuple):
        return array(v)
    if isinstance(v, UUID):
        return v.hex  # uuid input takes 32 hex digits
    return str(v)  # numbers


def array(values: Sequence) -> str:
    """A Postgres array literal, e.g. for `%s::uuid[]`."""
    try:  # a whole column at C speed for the usual element types, item by item otherwise
        first = type(values[0]) if values else None
        if first is str:
            joined = "\x00".join(values)  # Postgres text cannot hold NUL: a value with one goes item by item
            if joined.count("\x00") == len(values) - 1:
                if "\\" in joined or '"' in joined:
                    joined = joined.replace("\\", "\\\\").replace('"', '\\"')
                return '{"' + joined.replace("\x00", '","') + '"}'
        elif first is UUID:
            return "{" + ",".join([u.hex for u in values]) + "}"
    except (TypeError, AttributeError):  # a None or another type among them
        pass
    return "{" + ",".join(map(_array_item, values)) + "}"


def _copy_value(v) -> str:
    t = type(v)
    if t is str:
        return v.translate(_COPY_ESCAPES)
    if t is UUID:
        return v.hex
    if v is None:
        return "\\N"
    if t is bytes or t is memoryview:
        return "\\\\x" + bytes(v).hex()
    if t is bool:
        return "t" if v else "f"
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return array(v).translate(_COPY_ESCAPES)
    if isinstance(v, dict):
        return orjson.dumps(v).decode().translate(_COPY_ESCAPES)
    if isinstance(v, str):  # str subclasses (enums)
        return str.translate(v, _COPY_ESCAPES)
    return str(v)


def _copy_column(values: tuple) -> list[str]:
    """One column in COPY text format: a whole column at a time for the usual types (formatting value
    by value was most of a batch's client time), value by value otherwise."""
    first = type(values[0])
    try:
        if first is str:
            joined = "\x00".join(values)
            if any(c in joined for c in "\\\t\n\r"):
                joined = joined.translate(_COPY_ESCAPES)
            column = joined.split("\x00")
            if len(column) == len(values):  # else a value held a NUL: see below
                return column
        elif first is UUID:
            return [u.hex for u in values]
        elif first is bytes:
            return ["\\\\x" + b.hex() for b in values]
        elif first is datetime:
            text: dict[int, str] = {}  # a batch's rows mostly share a few timestamps
            return [text.get(id(v)) or text.setdefault(id(v), v.isoformat()) for v in values]
    except (TypeError, AttributeError):  # a None or another type among them
        pass
    return [_copy_value(v) for v in values]


def copy_rows(cur, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """COPY rows (tuples in `columns` order) into a table."""
    if not rows:
        return
    text = "\n".join(map("\t".join, zip(*map(_copy_column, zip(*rows))))) + "\n"
    cur.copy_expert(f"copy {table} ({', '.join(columns)}) from stdin", io.BytesIO(text.encode()), size=1 << 20)


def unnest(types: Sequence[str]) -> str:
    """`unnest(%s::t1[], %s::t2[], ...)`: rows from one array parameter per column (see `columns`).
    An array-typed column travels as text (arrays of arrays would be flattened): cast it back."""
    return "unnest(" + ", ".join(f"%s::{_carrier(t)}[]" for t in types) + ")"


def _carrier(sql_type: str) -> str:
    return "text" if sql_type.endswith("[]") else sql_type


def columns(rows: Sequence[Sequence], width: int, types: Sequence[str] = ()) -> list[str]:
    """The rows as one array literal per column, the parameters of `unnest`."""
    if not rows:
        return ["{}"] * width
    cols = list(zip(*rows))
    for i, t in enumerate(types):
        if t.endswith("[]"):
            cols[i] = [None if v is None else array(v) for v in cols[i]]
    return [array(col) for col in cols]


def insert_rows(cur, table: str, spec: Sequence[tuple[str, str]], rows: Sequence[Sequence],
                conflict: str = "on conflict do nothing") -> list | None:
    """Insert with `conflict` handling. Conflicts are rare on these tables (redeliveries, races), so
    the rows go by COPY inside a savepoint, and only if one conflicts the same rows go again through
    `insert ... select from unnest(...) <conflict>`: the same outcome, at COPY's cost almost always.
    `spec` is (column, Postgres type) pairs. Returns None when COPY inserted every row, else what the
    statement returned (`conflict` may end with a returning clause)."""
    if not rows:
        return []
    names = [name for name, _ in spec]
    cur.execute("savepoint bulk_copy")
    try:
        copy_rows(cur, table, names, rows)
        returned = None
    except psycopg2.errors.UniqueViolation:
        cur.execute("rollback to savepoint bulk_copy")
        types = [t for _, t in spec]
        select = ", ".join(f"c{i}::{t}" if t.endswith("[]") else f"c{i}" for i, t in enumerate(types))
        cur.execute(f"insert into {table} ({', '.join(names)}) select {select} "
                    f"from {unnest(types)} as v({', '.join(f'c{i}' for i in range(len(types)))}) {conflict}",
                    columns(rows, len(spec), types))
        returned = cur.fetchall() if cur.description else []
    cur.execute("release savepoint bulk_copy")
    return returned
