"""Bulk import of a legacy system's customers and touchpoints from CSV, and the clusters export.

Every row takes the path the service's own events take: it becomes a touchpoint validated by the event
models (`shared.events.from_document`), its identifiers are classified with the tenant's policy, and
batches resolve through `resolution.resolve_events` in one transaction each (merges, the 360, outbox
rows for downstream). Only the transport differs: no HTTP, no Kafka hop before resolution.

- Idempotent: a row's event_id is a uuid5 of tenant, source system (and type) and record key, and
  `store.record_ingested` admits each id once, so importing a file again never duplicates anything.
- Resumable: each committed batch moves `identity.import_runs.rows_done` in the same transaction; a
  re-run of the same file + mapping + tenant starts after the last committed row.
- Bad rows go to FILE.rejects.csv (row, line, reason, the original cells) and the import carries on.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import psycopg2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from services.identity import store
from services.identity.domain import Classified, classify
from services.identity.pii import Vault
from services.identity.policy import TenantPolicy
from services.identity.resolution import resolve_events
from services.identity.settings import IdentitySettings
from shared.bus.outbox import OUTBOX_MIGRATION
from shared.db import Database, migrate, sql_files
from shared.events import EVENT_TYPES, TOUCHPOINT_TYPE_NAMES, Channel, DecodeError, Touchpoint, from_document, utcnow

MIGRATIONS_DIR = Path(store.__file__).parent / "migrations"
# Fixed forever: event ids derived from it are what makes a re-import a no-op.
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://customer-hub/import")
GENDERS = {"m": "male", "male": "male", "man": "male", "男": "male", "f": "female", "female": "female",
           "woman": "female", "女": "female", "o": "other", "other": "other", "x": "other", "u": None,
           "unknown": None, "未知": None}
_TRUE, _FALSE = frozenset({"true", "t", "yes", "y", "1", "是"}), frozenset({"false", "f", "no", "n", "0", "否"})
_IDENTIFIER_TYPE = r"^([a-z_]+|custom:[a-z0-9_]{1,32})$"
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class MappingError(ValueError):
    """The mapping file is unusable (or does not fit the CSV's columns): nothing was imported."""


class RowError(ValueError):
    """One row cannot be imported; the reason goes to the rejects file."""


# ---- the mapping ------------------------------------------------------------------------------------
class Value(BaseModel):
    """Where a field comes from: a column (`mobile`), several joined (`[given, surname]`), or a literal
    (`{value: CNY}`); how to read it (`as`: text, int, bool, minor_units, date, datetime, json), date
    `format`s tried in order, the `timezone` of naive times, a `values` map, a `split` separator."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    columns: tuple[str, ...] = ()
    value: Any = None
    separator: str = " "
    as_: Literal["text", "int", "bool", "minor_units", "date", "datetime", "json"] = Field("text", alias="as")
    formats: tuple[str, ...] = ()
    timezone: str | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    split: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw):
        if isinstance(raw, str):
            return {"columns": [raw]}
        if isinstance(raw, list):
            return {"columns": raw}
        if isinstance(raw, dict):
            raw = dict(raw)
            if "column" in raw:
                raw["columns"] = [raw.pop("column")]
            if isinstance(raw.get("format"), str):
                raw["formats"] = [raw.pop("format")]
            elif "format" in raw:
                raw["formats"] = raw.pop("format")
        return raw

    @model_validator(mode="after")
    def _check(self):
        if bool(self.columns) == (self.value is not None):
            raise ValueError("give column(s) or a literal value, not both")
        if self.timezone:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {self.timezone!r}") from None
        return self

    @field_validator("values")
    @classmethod
    def _case_insensitive(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {str(k).strip().lower(): v for k, v in values.items()}

    def read(self, row: Mapping[str, str], name: str) -> Any:
        """The field's value in this row; None when its cells are empty."""
        if self.value is not None:
            return self.value
        text = self.separator.join(p for p in (row[c].strip() for c in self.columns) if p)
        if not text:
            return None
        if self.split:
            items = [self._convert(p.strip(), name) for p in text.split(self.split) if p.strip()]
            items = [i for i in items if i is not None]
            return items or None
        return self._convert(text, name)

    def _convert(self, text: str, name: str) -> Any:
        if self.values:
            key = text.lower()
            if key in self.values:
                mapped = self.values[key]
                if not isinstance(mapped, str):
                    return mapped
                text = mapped
        kind = self.as_
        if kind == "text":
            return text
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                raise RowError(f"{name}: {text!r} is not a whole number") from None
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise RowError(f"{name}: {text!r} is not yes/no")
        if kind == "minor_units":
            try:
                return int((Decimal(text) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            except InvalidOperation:
                raise RowError(f"{name}: {text!r} is not an amount") from None
        if kind == "date":
            return self._date(text, name)
        if kind == "datetime":
            return self._datetime(text, name)
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RowError(f"{name}: not JSON") from None

    def _date(self, text: str, name: str) -> date:
        for fmt in self.formats:
            try:
                if fmt == "%Y-%m-%d" and _ISO_DATE.fullmatch(text):  # strptime's result, at a tenth of its cost
                    return date(int(text[:4]), int(text[5:7]), int(text[8:]))
                return datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        if not self.formats:
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        raise RowError(f"{name}: {text!r} is not a date in {' or '.join(self.formats) or 'YYYY-MM-DD'}")

    def _datetime(self, text: str, name: str) -> datetime:
        parsed = None
        for fmt in self.formats:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None and not self.formats:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                pass
        if parsed is None:
            raise RowError(f"{name}: {text!r} is not a date-time in {' or '.join(self.formats) or 'ISO 8601'}")
        if parsed.tzinfo is None:
            if not self.timezone:
                raise RowError(f"{name}: {text!r} has no UTC offset and the mapping gives no timezone")
            parsed = parsed.replace(tzinfo=ZoneInfo(self.timezone))
        return parsed

    def with_defaults(self, **defaults) -> Value:
        """This spec with the field's usual reading wherever the mapping did not say otherwise."""
        given = {"as_" if k == "as" else k for k in self.model_fields_set}
        return self.model_copy(update={k: v for k, v in defaults.items() if k not in given})


class IdentifierMap(Value):
    """An identifier column: `{type: phone, column: mobile}`; `scope` (or `scope_column`) for scoped types
    (wechat_openid: app id, pos_customer_id: store id, source_record: system name)."""

    type: Annotated[str, Field(pattern=_IDENTIFIER_TYPE)]
    scope: str | None = None
    scope_column: str | None = None


class Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Value | None = None
    birth_date: Value | None = None
    gender: Value | None = None
    address: Value | None = None
    verified: Value | None = None

    @field_validator("birth_date", "gender", "address", "verified")
    @classmethod
    def _usual_reading(cls, spec: Value | None, info: ValidationInfo) -> Value | None:
        if spec is None:
            return spec
        if info.field_name == "gender":  # the mapping's own values extend the usual spellings
            return spec.model_copy(update={"values": {**GENDERS, **spec.values}})
        usual = {"birth_date": {"as_": "date"}, "address": {"separator": ", "}, "verified": {"as_": "bool"}}
        return spec.with_defaults(**usual[info.field_name])


class Matching(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    auto_merge_threshold: float | None = None
    suggest_threshold: float | None = None


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    quotechar: Annotated[str, Field(min_length=1, max_length=1)] = '"'
    encoding: str = "utf-8-sig"


class ImportMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, Field(min_length=1, max_length=128, description="The legacy system's name.")]
    record_key: Value
    identifiers: tuple[IdentifierMap, ...] = ()
    channel: Annotated[Channel | Value, Field(union_mode="left_to_right")] = Channel.pos
    store_id: Value | None = None
    csv: CsvOptions = CsvOptions()

    @field_validator("record_key")
    @classmethod
    def _composite_keys_join_with_colons(cls, spec: Value) -> Value:
        return spec.with_defaults(separator=":")


class CustomerMapping(ImportMapping):
    """Customers: one profile.updated per row; the record key becomes a source_record identifier."""

    attributes: Attributes = Attributes()
    pets: tuple[dict[str, Value], ...] = ()
    vehicles: tuple[dict[str, Value], ...] = ()
    observed_at: Value | None = Field(None, description="When the legacy system last saw the record.")
    matching: Matching | None = None
    require_identifier: bool = Field(
        True, description="Reject a row whose only usable identifier is its record key.")

    @field_validator("observed_at")
    @classmethod
    def _datetime(cls, spec: Value | None) -> Value | None:
        return spec.with_defaults(as_="datetime") if spec else spec


class TouchpointMapping(ImportMapping):
    """Touchpoints of one type, e.g. a legacy POS's sales as purchase.completed."""

    type: str
    occurred_at: Value
    identifiers: Annotated[tuple[IdentifierMap, ...], Field(min_length=1)]
    payload: dict[str, Value] = Field(default_factory=dict, description="Payload field (dotted for nesting).")

    @field_validator("type")
    @classmethod
    def _touchpoint_type(cls, value: str) -> str:
        if value not in TOUCHPOINT_TYPE_NAMES:
            raise ValueError(f"{value!r} is not a touchpoint type ({', '.join(sorted(TOUCHPOINT_TYPE_NAMES))})")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _datetime(cls, spec: Value) -> Value:
        return spec.with_defaults(as_="datetime")


KINDS: dict[str, type[ImportMapping]] = {"customers": CustomerMapping, "touchpoints": TouchpointMapping}


def load_mapping(path: Path, kind: str) -> ImportMapping:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from None
    try:
        return KINDS[kind].model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise MappingError(f"mapping {path}: {problems}") from None


def _columns_named(node) -> set[str]:
    if isinstance(node, IdentifierMap):
        return set(node.columns) | ({node.scope_column} if node.scope_column else set())
    if isinstance(node, Value):
        return set(node.columns)
    if isinstance(node, BaseModel):
        return set().union(*(_columns_named(getattr(node, f)) for f in type(node).model_fields))
    if isinstance(node, dict):
        return set().union(*(_columns_named(v) for v in node.values()))
    if isinstance(node, tuple | list):
        return set().union(*(_columns_named(v) for v in node))
    return set()


# ---- rows -> touchpoints ------------------------------------------------------------------------------
class RowReader:
    """Turns one CSV row into the validated touchpoint it stands for, or says why it cannot."""

    def __init__(self, mapping: ImportMapping, header: list[str], tenant: str, policy: TenantPolicy,
                 settings: IdentitySettings, now: datetime):
        missing = sorted(_columns_named(mapping) - set(header))
        if missing:
            raise MappingError(f"the mapping names columns the file does not have: {', '.join(missing)}")
        if len(set(header)) != len(header):
            raise MappingError("the file's header repeats a column name")
        self.mapping, self.header, self.tenant, self.policy = mapping, header, tenant, policy
        self.now, self.future_s = now, settings.max_future_seconds
        self.latest = now + timedelta(seconds=settings.max_future_seconds)
        self.customers = isinstance(mapping, CustomerMapping)
        self.type = "profile.updated" if self.customers else mapping.type
        self.version = EVENT_TYPES[self.type].current_version()

    def record_key(self, row: Mapping[str, str]) -> str:
        key = self.mapping.record_key.read(row, "record_key")
        if key is None:
            raise RowError("record key is empty")
        return str(key)

    def event_id(self, key: str) -> uuid.UUID:
        parts = (self.tenant, self.mapping.source) if self.customers else (self.tenant, self.mapping.source, self.type)
        return uuid.uuid5(EVENT_NAMESPACE, "\x1f".join((*parts, key)))

    def touchpoint(self, row: Mapping[str, str], key: str) -> tuple[Touchpoint, Classified | None]:
        """The row's touchpoint, and its classification under the import's policy when screening made one."""
        m = self.mapping
        identifiers = self._identifiers(row)
        if self.customers:
            identifiers.insert(0, {"type": "source_record", "value": key, "scope": m.source})
            occurred = m.observed_at.read(row, "observed_at") if m.observed_at else None
            payload = self._customer_payload(row)
        else:
            occurred = m.occurred_at.read(row, "occurred_at")
            if occurred is None:
                raise RowError("occurred_at is empty")
            payload = self._payload(row)
            if not identifiers:
                raise RowError("no usable identifier: no identifier given")
        channel = m.channel if isinstance(m.channel, Channel) else m.channel.read(row, "channel")
        doc = {"event_id": self.event_id(key), "type": self.type, "schema_version": self.version,
               "occurred_at": occurred or self.now, "recorded_at": self.now, "tenant_id": self.tenant,
               "source": "import", "channel": channel, "identifiers": identifiers, "payload": payload}
        if m.store_id is not None and (store_id := m.store_id.read(row, "store_id")) is not None:
            doc["store_id"] = store_id
        try:
            event = from_document(doc)
        except DecodeError as exc:
            raise RowError(exc.reason) from None
        if event.occurred_at > self.latest:
            raise RowError(f"occurred_at is more than {self.future_s // 3600} hours in the future")
        return event, self._require_usable(event)

    def _identifiers(self, row: Mapping[str, str]) -> list[dict]:
        out = []
        for spec in self.mapping.identifiers:
            found = spec.read(row, spec.type)
            if found is None:
                continue
            scope = (row[spec.scope_column].strip() or None) if spec.scope_column else spec.scope
            for value in found if isinstance(found, list) else [found]:
                ident = {"type": spec.type, "value": str(value)}
                if scope:
                    ident["scope"] = scope
                out.append(ident)
        return out

    def _customer_payload(self, row: Mapping[str, str]) -> dict:
        m = self.mapping
        payload = {name: v for name in type(m.attributes).model_fields
                   if (spec := getattr(m.attributes, name)) is not None and (v := spec.read(row, name)) is not None}
        for kind, specs in (("pets", m.pets), ("vehicles", m.vehicles)):
            objects = [o for o in (self._object(s, row, kind) for s in specs) if o]
            if objects:
                payload[kind] = objects
        return payload

    @staticmethod
    def _object(specs: dict[str, Value], row: Mapping[str, str], kind: str) -> dict:
        return {name: v for name, spec in specs.items() if (v := spec.read(row, f"{kind}.{name}")) is not None}

    def _payload(self, row: Mapping[str, str]) -> dict:
        payload: dict = {}
        for name, spec in self.mapping.payload.items():
            value = spec.read(row, name)
            if value is None:
                continue
            *parents, leaf = name.split(".")
            node = payload
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return payload

    def _require_usable(self, event: Touchpoint) -> Classified | None:
        """The same normalisation and junk rules resolution applies; a row the resolver could only file
        under its own record key (or under nothing) is rejected. Returns the classification, which
        resolution reuses while the tenant's policy is unchanged."""
        if self.customers and not self.mapping.require_identifier:
            return None
        item = classify(event, self.policy)
        own = ("source_record", self.mapping.source) if self.customers else None
        if not any((k.type, k.scope) != own for k in item.strong + item.weak):
            reasons = "; ".join(r.reason for r in item.rejected) or "no identifier given"
            raise RowError(f"no usable identifier: {reasons}")
        return item


# ---- runs, checkpoints, rejects -------------------------------------------------------------------
@dataclass
class ImportReport:
    kind: str
    path: Path
    run_id: str
    batch_size: int = 0  # rows per transaction (lowered when the lock table is too small for the asked one)
    rows_total: int = 0  # data rows seen in the file
    rows_skipped: int = 0  # done by an earlier, interrupted run of the same import
    imported: int = 0
    already_imported: int = 0  # event ids admitted before (the same rows under another run id)
    rejected: int = 0
    customers_created: int = 0
    profiles_merged: int = 0
    identifiers_rejected: int = 0  # kept on the profile as rejected (bad format, junk, over a limit)
    elapsed_s: float = 0.0
    rejects_path: Path | None = None
    interrupted: bool = False
    finished: bool = False

    @property
    def rows_processed(self) -> int:
        return self.rows_total - self.rows_skipped

    @property
    def rows_per_s(self) -> float:
        return self.rows_processed / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class Progress:
    rows_done: int
    rows_estimate: int
    report: ImportReport


def _fingerprint(path: Path) -> tuple[str, int]:
    """Content hash and an estimate of the data rows (lines minus the header) in one pass."""
    digest, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), max(lines - 1, 0)


def run_id_of(tenant: str, kind: str, content_sha: str, mapping: ImportMapping) -> str:
    text = "\x1f".join((tenant, kind, content_sha, mapping.model_dump_json(by_alias=True)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rejects_path_for(path: Path) -> Path:
    return path.with_name(path.stem + ".rejects.csv")


class RejectsFile:
    """FILE.rejects.csv: row number, physical line, reason and the original cells. Written before the
    batch commits; a resumed run first drops what lies past the checkpoint, so no reject is doubled."""

    def __init__(self, path: Path, header: list[str], resume_after: int):
        self.path, self.header = path, header
        self._file = None
        if resume_after == 0:
            path.unlink(missing_ok=True)
        elif path.exists():
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= resume_after]
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows[:1] + kept)
            tmp.replace(path)

    def write(self, rejects: list[tuple[int, int, str, list[str]]]) -> None:
        if not rejects:
            return
        if self._file is None:
            fresh = not self.path.exists()
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            if fresh:
                self._writer.writerow(["row", "line", "reason", *self.header])
        self._writer.writerows([row_no, line, reason, *cells] for row_no, line, reason, cells in rejects)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def ensure_schema(db: Database) -> None:
    """The identity schema, as the service migrates it at start (so a fresh database works)."""
    migrate(db, store.SCHEMA, [OUTBOX_MIGRATION] + sql_files(MIGRATIONS_DIR))


def apply_matching(cur, tenant: str, matching: Matching, default_region: str) -> TenantPolicy:
    current = store.tenant_policies(cur, {tenant}, default_region)[tenant]
    try:
        policy = TenantPolicy.model_validate({**current.model_dump(), **matching.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        raise MappingError(f"matching: {exc.errors(include_url=False)[0]['msg']}") from None
    store.save_policy(cur, tenant, policy)
    return policy


def _lock_safe_batch(cur, mapping: ImportMapping, batch_size: int, workers: int) -> int:
    """The largest batch whose advisory locks fit Postgres's lock table. A bulk batch takes up to two
    transaction-scoped locks per identifier (its bucket, shared, and its own: store.lock_tokens), and
    the table is shared by every session (max_locks_per_transaction x (max_connections +
    max_prepared_transactions): 6,400 by default), so 2 workers x 2,000 rows x 3 identifiers fail with
    "out of shared memory". Use at most half of it."""
    cur.execute("select current_setting('max_locks_per_transaction')::int * (current_setting('max_connections')::int"
                " + current_setting('max_prepared_transactions')::int)")
    slots = cur.fetchone()[0]
    per_row = 2 * (sum(3 if spec.split else 1 for spec in mapping.identifiers) + isinstance(mapping, CustomerMapping))
    return max(1, min(batch_size, slots // 2 // (max(workers, 1) * max(per_row, 1))))


# Tables resolution reads by customer id or token while a bulk import grows them.
_ANALYZED = ("customers", "customer_keys", "identifiers", "weak_identifiers", "profile_attributes", "resolved_events",
             "ingested_events", "match_queue")
_FIRST_ANALYZE = 5000


def analyze(db: Database) -> None:
    """Fresh planner statistics, at 5,000 imported rows and each doubling after (and at the end): a
    table loaded in bulk has none until autovacuum catches up (never, where it is off), and without
    them resolution's `customer_id = any(...)` reads become sequential scans, so every batch costs
    more than the one before. ANALYZE samples a fixed number of rows and blocks no writer."""
    with db.transaction() as cur:
        for table in _ANALYZED:
            cur.execute(f"analyze identity.{table}")


def _run_lock_key(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"import:{run_id}".encode()).digest()[:8], "big", signed=True)


@dataclass
class _Batch:
    """Rows screened by the reading process: `rows` still to build and resolve, `rejects` already known."""

    seq: int
    last_row: int = 0
    rows: list[tuple[int, int, dict, str]] = field(default_factory=list)  # (row number, line, row, key)
    rejects: list[tuple[int, int, str, list[str]]] = field(default_factory=list)  # (row, line, reason, cells)


@dataclass
class _Outcome:
    seq: int
    last_row: int
    rejects: list[tuple[int, int, str, list[str]]]
    imported: int = 0
    already_imported: int = 0
    customers_created: int = 0
    profiles_merged: int = 0
    identifiers_rejected: int = 0


def import_file(db: Database, settings: IdentitySettings, kind: str, path: Path, mapping: ImportMapping,
                *, tenant: str, batch_size: int = 2000, workers: int = 1,
                on_progress: Callable[[Progress], None] | None = None) -> ImportReport:
    """Import a CSV (kind: customers | touchpoints); resumes a previous interrupted run of the same
    tenant, file content and mapping. Ctrl-C (KeyboardInterrupt) stops it: with one worker the batch in
    flight rolls back, with several the batches in flight finish first; the report says interrupted and a
    re-run carries on. `workers` > 1 resolves batches in that many processes, each its own transaction."""
    if not isinstance(mapping, KINDS[kind]):
        raise MappingError(f"a {kind} import needs a {KINDS[kind].__name__}")
    path = Path(path)
    started = utcnow()
    content_sha, estimate = _fingerprint(path)
    report = ImportReport(kind, path, run_id_of(tenant, kind, content_sha, mapping),
                          rejects_path=rejects_path_for(path))
    ensure_schema(db)
    with db.connection() as lock_conn:
        with lock_conn.cursor() as lock:
            lock.execute("select pg_try_advisory_lock(%s)", (_run_lock_key(report.run_id),))
            if not lock.fetchone()[0]:
                raise MappingError("this import (same tenant, file and mapping) is already running")
            lock_conn.commit()
            try:
                _import(db, settings, mapping, report, tenant, batch_size, workers, estimate, started,
                        on_progress)
            finally:
                _flush_commits(db, report.run_id)
                lock.execute("select pg_advisory_unlock(%s)", (_run_lock_key(report.run_id),))
                lock_conn.commit()
    return report


def _flush_commits(db: Database, run_id: str) -> None:
    """A synchronous commit waits for the WAL before it, so every batch committed without waiting
    (see _BatchWriter.commit) is durable once this returns."""
    with db.transaction() as cur:
        cur.execute("update identity.import_runs set updated_at = now() where run_id = %s", (run_id,))


def _import(db: Database, settings: IdentitySettings, mapping: ImportMapping, report: ImportReport,
            tenant: str, batch_size: int, workers: int, estimate: int, started: datetime,
            on_progress: Callable[[Progress], None] | None) -> None:
    with db.transaction() as cur:
        if isinstance(mapping, CustomerMapping) and mapping.matching is not None:
            apply_matching(cur, tenant, mapping.matching, settings.default_region)
        policy = store.tenant_policies(cur, {tenant}, settings.default_region)[tenant]
        cur.execute("insert into identity.import_runs (run_id, tenant_id, kind) values (%s, %s, %s) "
                    "on conflict (run_id) do nothing", (report.run_id, tenant, report.kind))
        cur.execute("select rows_done from identity.import_runs where run_id = %s", (report.run_id,))
        done_before = cur.fetchone()[0]
        report.batch_size = _lock_safe_batch(cur, mapping, batch_size, workers)
        batch_size = report.batch_size

    with open(report.path, newline="", encoding=mapping.csv.encoding) as f:
        rows = csv.reader(f, delimiter=mapping.csv.delimiter, quotechar=mapping.csv.quotechar)
        try:
            header = [h.strip() for h in next(rows)]
        except StopIteration:
            raise MappingError(f"{report.path} is empty (no header row)") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise MappingError(f"{report.path}: cannot read the header ({exc})") from None
        reader = RowReader(mapping, header, tenant, policy, settings, started)
        rejects = RejectsFile(report.rejects_path, header, done_before)
        t0 = time.perf_counter()

        analyze_at = [_FIRST_ANALYZE]

        def account(outcome: _Outcome) -> None:
            if report.imported + outcome.imported >= analyze_at[0]:
                analyze(db)
                analyze_at[0] = 2 * (report.imported + outcome.imported)
            report.imported += outcome.imported
            report.already_imported += outcome.already_imported
            report.rejected += len(outcome.rejects)
            report.customers_created += outcome.customers_created
            report.profiles_merged += outcome.profiles_merged
            report.identifiers_rejected += outcome.identifiers_rejected
            report.elapsed_s = time.perf_counter() - t0
            if on_progress:
                on_progress(Progress(outcome.last_row, max(estimate, report.rows_total), report))

        def account_all(outcomes) -> None:
            """Every committed batch is counted even when Ctrl-C lands while counting the first of them."""
            interrupted = False
            for outcome in list(outcomes):
                try:
                    account(outcome)
                except KeyboardInterrupt:
                    interrupted = True
            if interrupted:
                raise KeyboardInterrupt

        committer = (_InProcess(_BatchWriter(db, settings, reader, report.run_id), rejects) if workers <= 1
                     else _Pool(workers, db, settings, reader, report.run_id, rejects, done_before))
        try:
            if on_progress:
                on_progress(Progress(done_before, max(estimate, done_before), report))
            for batch in _batches(rows, header, reader, report, done_before, batch_size):
                account_all(committer.submit(batch))
            account_all(committer.finish())
            report.finished = True
            if report.imported:
                analyze(db)
        except KeyboardInterrupt:
            report.interrupted = True
            for outcome in committer.stop():
                account(outcome)
        finally:
            committer.close()
            report.elapsed_s = time.perf_counter() - t0
            rejects.close()
    if report.rejected == 0 and report.rejects_path and not report.rejects_path.exists():
        report.rejects_path = None


def _batches(rows: Iterator[list[str]], header: list[str], reader: RowReader, report: ImportReport,
             done_before: int, batch_size: int) -> Iterator[_Batch]:
    """Rows in batches, numbered from 1 after the header (blank lines are not rows). Screens what needs
    the whole file in order: the column count, and repeated record keys (the first row with a key owns
    it, imported or rejected). Rows an earlier run committed are skipped but still claim their keys."""
    keys_seen: set[int] = set()
    batch = _Batch(0)
    row_no = 0
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # an unreadable record (a NUL byte, an oversized field): reject it, go on
            cells = [f"<unreadable: {exc}>"]
        except UnicodeDecodeError as exc:
            raise MappingError(f"{report.path}: not {reader.mapping.csv.encoding} after row {row_no} ({exc}); "
                               "set csv.encoding in the mapping (e.g. gb18030)") from None
        if not cells:
            continue
        row_no += 1
        report.rows_total = row_no
        line = getattr(rows, "line_num", 0)
        try:
            if len(cells) != len(header):
                raise RowError(f"expected {len(header)} columns, found {len(cells)}")
            row = dict(zip(header, cells))
            key = reader.record_key(row)
            seen = _key_hash(key)
            if seen in keys_seen:
                raise RowError(f"record key {key!r} repeats an earlier row of this file")
            keys_seen.add(seen)
            if row_no > done_before:
                batch.rows.append((row_no, line, row, key))
        except RowError as exc:
            if row_no > done_before:
                batch.rejects.append((row_no, line, str(exc), cells))
        if row_no <= done_before:
            report.rows_skipped = row_no
            continue
        batch.last_row = row_no
        if len(batch.rows) + len(batch.rejects) >= batch_size:
            yield batch
            batch = _Batch(batch.seq + 1)
    if batch.rows or batch.rejects:
        yield batch


def batch_vault(settings: IdentitySettings) -> Vault:
    """A vault whose key cache holds one batch's keys. A long-lived Vault is unsafe in bulk: its LRU
    (50,000 keys) fills after 50,000 customers, and then `store.load_keys` can evict, while loading the
    keys it lacks, a key it has just reported present (`has_key` does not refresh recency), so
    resolution's next `encrypt` raises KeyError and `suggestions.profile_facts` silently skips values.
    One vault per batch keeps every cache below its limit."""
    return Vault(settings.pii_master_key.get_secret_value())


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class _BatchWriter:
    """Builds a batch's touchpoints and resolves them in one transaction that also moves the checkpoint."""

    def __init__(self, db: Database, settings: IdentitySettings, reader: RowReader, run_id: str):
        self.db, self.settings, self.reader, self.run_id = db, settings, reader, run_id

    def commit(self, batch: _Batch, checkpoint: int,
               before_commit: Callable[[list], None] | None = None) -> _Outcome:
        events, bad, classified = [], list(batch.rejects), {}
        for row_no, line, row, key in batch.rows:
            try:
                event, item = self.reader.touchpoint(row, key)
                events.append(event)
                if item is not None:
                    classified[event.event_id] = (self.reader.policy, item)
            except RowError as exc:
                bad.append((row_no, line, str(exc), [row[h] for h in self.reader.header]))
        bad.sort(key=lambda r: r[0])
        if before_commit:
            before_commit(bad)
        for attempt in range(1, _DEADLOCK_RETRIES + 1):
            try:
                todo, plan = self._resolve(events, classified if attempt == 1 else None, checkpoint)
                break
            except psycopg2.errors.DeadlockDetected:
                # Workers' batches resolve side by side (store.lock_tokens): two that came to wait for
                # each other's customer rows are failed by Postgres, and nothing of them was committed.
                if attempt == _DEADLOCK_RETRIES:
                    raise
        outcome = _Outcome(batch.seq, batch.last_row, bad, len(todo), len(events) - len(todo))
        if plan is not None:
            outcome.customers_created = len(plan.new_customers)
            outcome.profiles_merged = sum(len(m.losers) for m in plan.merges)
            outcome.identifiers_rejected = len(plan.rejected)
        return outcome

    def _resolve(self, events: list[Touchpoint], classified: dict | None, checkpoint: int):
        with self.db.transaction() as cur:
            # The commit need not wait for its WAL flush: a crash may lose the last batches, but their
            # checkpoint goes with them, so the re-run redoes them; import_file flushes before it returns.
            cur.execute("set local synchronous_commit = off")
            fresh = store.record_ingested(cur, self.reader.tenant, [e.event_id for e in events])
            todo = [e for e in events if e.event_id in fresh]
            plan = (resolve_events(cur, todo, self.settings, batch_vault(self.settings), classified=classified,
                                   bulk=True) if todo else None)
            cur.execute("update identity.import_runs set rows_done = greatest(rows_done, %s), updated_at = now() "
                        "where run_id = %s", (checkpoint, self.run_id))
        return todo, plan


_DEADLOCK_RETRIES = 3  # resolution changes the classifications it is given: a retry classifies afresh


class _InProcess:
    """One batch at a time: its rejects are written before it commits, with the checkpoint at its last row."""

    def __init__(self, writer: _BatchWriter, rejects: RejectsFile):
        self.writer, self.rejects = writer, rejects

    def submit(self, batch: _Batch) -> list[_Outcome]:
        return [self.writer.commit(batch, batch.last_row, self.rejects.write)]

    def finish(self) -> list[_Outcome]:
        return []

    stop = finish

    def close(self) -> None:
        pass


_worker: _BatchWriter | None = None


def _start_worker(dsn: str, settings: IdentitySettings, reader: RowReader, run_id: str, parent: int) -> None:
    import signal

    from shared.process import die_with_parent

    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the reading process's to handle
    die_with_parent()  # a killed import leaves no worker waiting on its queue forever
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)
    _worker = _BatchWriter(Database(dsn, maxconn=1, application_name="hub-import-worker"), settings, reader, run_id)


def _commit_in_worker(batch: _Batch, checkpoint: int) -> _Outcome:
    return _worker.commit(batch, checkpoint)


class _Pool:
    """Batches resolved in worker processes, several in flight. They may commit out of order, so each
    carries as checkpoint only the last row before which every batch is committed and its rejects are
    written (the reading process writes them in file order). A crash can leave a few committed batches
    past the checkpoint: the re-run finds their event ids already admitted and changes nothing."""

    def __init__(self, workers: int, db: Database, settings: IdentitySettings, reader: RowReader, run_id: str,
                 rejects: RejectsFile, done_before: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker,
                                        initargs=(db.dsn, settings, reader, run_id, os.getpid()))
        self.db, self.run_id = db, run_id
        self.limit, self.rejects, self.checkpoint = workers * 2, rejects, done_before
        self.inflight: dict = {}
        self.finished: dict[int, _Outcome] = {}
        self.next_seq = 0

    def submit(self, batch: _Batch) -> list[_Outcome]:
        self.inflight[self.pool.submit(_commit_in_worker, batch, self.checkpoint)] = batch.seq
        return self._collect(wait_all=False)

    def finish(self) -> list[_Outcome]:
        return self._collect(wait_all=True)

    stop = finish  # let the batches in flight commit; nothing new is sent

    def _collect(self, wait_all: bool) -> list[_Outcome]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done_now: list[_Outcome] = []
        while self.inflight and (wait_all or len(self.inflight) >= self.limit):
            done, _ = wait(list(self.inflight), return_when=FIRST_COMPLETED)
            for future in done:
                self.inflight.pop(future)
                outcome = future.result()
                self.finished[outcome.seq] = outcome
            while self.next_seq in self.finished:  # in file order: rejects, then the checkpoint
                outcome = self.finished.pop(self.next_seq)
                self.rejects.write(outcome.rejects)
                self.checkpoint = outcome.last_row
                self.next_seq += 1
                done_now.append(outcome)
        if wait_all and done_now:
            self._record_checkpoint()
        return done_now

    def _record_checkpoint(self) -> None:
        with self.db.transaction() as cur:
            cur.execute("update identity.import_runs set rows_done = greatest(rows_done, %s), updated_at = now() "
                        "where run_id = %s", (self.checkpoint, self.run_id))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---- export ---------------------------------------------------------------------------------------
@dataclass
class ExportReport:
    path: Path
    records: int = 0
    customers: int = 0
    queue_processed: int = 0
    auto_merged: int = 0
    unreadable: int = 0  # values whose customer key was destroyed by an erasure
    elapsed_s: float = 0.0


def drain_match_queue(db: Database, settings: IdentitySettings,
                      on_progress: Callable[[int, int], None] | None = None) -> int:
    """Score every queued profile (auto-merging per each tenant's policy) until the queue is empty."""
    from services.identity.suggestions import process_queue  # matching's name tables: only the export needs them

    with db.transaction() as cur:
        cur.execute("select count(*) from identity.match_queue")
        queued = cur.fetchone()[0]
    processed = 0
    while n := process_queue(db, batch_vault(settings), settings):
        processed += n
        if on_progress:
            on_progress(processed, max(queued, processed))
    return processed


def export_clusters(db: Database, settings: IdentitySettings, out: Path, *, tenant: str,
                    source: str | None = None, chunk: int = 5000,
                    on_drain: Callable[[int, int], None] | None = None) -> ExportReport:
    """Drain the match queue, then write `source_record,customer_id` for every imported record, the
    customer being the canonical survivor of any merge. Rows come grouped by customer."""
    t0 = time.perf_counter()
    report = ExportReport(Path(out))
    ensure_schema(db)
    with db.transaction() as cur:
        cur.execute("select count(*) from identity.match_suggestions where tenant_id = %s and status = 'auto_merged'",
                    (tenant,))
        merged_before = cur.fetchone()[0]
    report.queue_processed = drain_match_queue(db, settings, on_drain)
    scope_filter = "and i.id_scope = %s " if source else ""
    customers: set[uuid.UUID] = set()
    tmp = report.path.with_name(report.path.name + ".tmp")
    with db.connection() as conn, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["source_record", "customer_id"])
        with conn.cursor() as cur:
            cur.execute("select count(*) from identity.match_suggestions where tenant_id = %s "
                        "and status = 'auto_merged'", (tenant,))
            report.auto_merged = cur.fetchone()[0] - merged_before
        with conn.cursor(name="import_clusters") as rows, conn.cursor() as cur:
            rows.itersize = chunk
            rows.execute(
                "select i.value_enc, i.key_id, coalesce(c.merged_into, c.customer_id) from identity.identifiers i "
                "join identity.customers c on c.customer_id = i.customer_id "
                f"where i.tenant_id = %s and i.id_type = 'source_record' {scope_filter}order by 3, i.token",
                (tenant, source) if source else (tenant,))
            while batch := rows.fetchmany(chunk):
                vault = batch_vault(settings)
                store.load_keys(cur, vault, {key_id for _, key_id, _ in batch})
                out_rows = []
                for value_enc, key_id, customer_id in batch:
                    value = _decrypt(cur, vault, key_id, value_enc)
                    if value is None:
                        report.unreadable += 1
                        continue
                    out_rows.append((value, customer_id))
                    customers.add(customer_id)
                writer.writerows(out_rows)
                report.records += len(out_rows)
    tmp.replace(report.path)
    report.customers = len(customers)
    report.elapsed_s = time.perf_counter() - t0
    return report


def _decrypt(cur, vault: Vault, key_id: uuid.UUID, value_enc) -> str | None:
    """The value, or None when its key was erased; a key the cache evicted is loaded again."""
    for _ in range(2):
        try:
            return vault.decrypt(key_id, value_enc)
        except KeyError:
            if not store.load_keys(cur, vault, [key_id]):
                return None
    return None


# ---- which database ---------------------------------------------------------------------------------
def describe(report: ImportReport) -> dict[str, Any]:
    """The summary as plain values (the CLI's table and --json)."""
    return {
        "file": str(report.path), "kind": report.kind, "run_id": report.run_id, "batch_rows": report.batch_size,
        "rows_read": report.rows_total, "rows_skipped_done_before": report.rows_skipped,
        "imported": report.imported, "already_imported": report.already_imported, "rejected": report.rejected,
        "customers_created": report.customers_created, "profiles_merged": report.profiles_merged,
        "identifiers_kept_as_rejected": report.identifiers_rejected,
        "elapsed_s": round(report.elapsed_s, 2), "rows_per_s": round(report.rows_per_s),
        "rejects_file": str(report.rejects_path) if report.rejects_path else None,
        "status": "interrupted" if report.interrupted else "done" if report.finished else "failed",
    }


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2, default=str)


# ---- the commands (hub/cli.py only declares their options) -----------------------------------------
def _console():
    from rich.console import Console

    return Console(stderr=True)


def _progress_bar(console, unit: str = "rows"):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"… {unit}/s", style="progress.data.speed")

    return Bar(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               RowsPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill) handled like Ctrl-C: the batch in flight rolls back and the summary is printed."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _open(database: tuple[str, str], console) -> tuple[Database, IdentitySettings, None]:
    url, how = database
    console.print(f"• database: {how}")
    settings = IdentitySettings(database_url=url)
    return Database(url, maxconn=4, application_name="hub-import"), settings, None


def run_import_command(kind: str, file: Path, mapping_path: Path, tenant: str, batch: int,
                       database: tuple[str, str],
                       as_json: bool = False, workers: int = 1) -> int:
    import re
    import signal

    from rich.table import Table

    console = _console()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", tenant):
        console.print(f"[red]--tenant {tenant!r} is not a tenant id")
        return 2
    if not Path(file).is_file():
        console.print(f"[red]{file}: no such file")
        return 2
    try:
        mapping = load_mapping(mapping_path, kind)
    except MappingError as exc:
        console.print(f"[red]{exc}")
        return 2
    db, settings, server = _open(database, console)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with _progress_bar(console) as bar:
            task = bar.add_task(f"{kind} {Path(file).name}", total=None)

            def on_progress(p: Progress) -> None:
                bar.update(task, completed=p.rows_done, total=p.rows_estimate)

            report = import_file(db, settings, kind, Path(file), mapping, tenant=tenant,
                                 batch_size=batch, workers=workers, on_progress=on_progress)
    except MappingError as exc:
        console.print(f"[red]{exc}")
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
        db.close()
        if server is not None:
            server.cleanup()
    summary = describe(report)
    if report.batch_size < batch:
        console.print(f"[yellow]batches of {report.batch_size:,} rows instead of {batch:,}: resolution takes one "
                      "advisory lock per identifier and Postgres's lock table (max_locks_per_transaction) "
                      "would not hold more")
    if as_json:
        print(to_json(summary))
    else:
        table = Table(title=f"import {kind}: {summary['status']}", show_header=False)
        for name, value in summary.items():
            table.add_row(name.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
        console.print(table)
    if report.interrupted:
        console.print(f"[yellow]interrupted after row {report.rows_total:,} (committed up to the last "
                      "finished batch): run the same command again to resume")
        return 130
    return 0


def run_export_command(out: Path, tenant: str, source: str | None, database: tuple[str, str]) -> int:
    from rich.table import Table

    console = _console()
    db, settings, server = _open(database, console)
    try:
        with _progress_bar(console, unit="profiles") as bar:
            task = bar.add_task("matching queued profiles", total=None)
            report = export_clusters(db, settings, out, tenant=tenant, source=source,
                                     on_drain=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        db.close()
        if server is not None:
            server.cleanup()
    table = Table(title=f"clusters of {tenant} -> {report.path}", show_header=False)
    for name, value in (("records", report.records), ("customers", report.customers),
                        ("queued profiles matched", report.queue_processed),
                        ("auto-merged while draining", report.auto_merged),
                        ("unreadable (erased)", report.unreadable), ("elapsed s", round(report.elapsed_s, 2))):
        table.add_row(name, f"{value:,}")
    console.print(table)
    return 0
