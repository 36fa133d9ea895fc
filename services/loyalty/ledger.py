"""The points ledger's arithmetic, free of storage: which points are still held in which lot (so they
expire oldest first and liability is known per store), what a member earned in the tier window, and
the mirror entries that move history between profiles on merge and split.

Entries are append-only and signed; the balance is their sum, always. A lot is a credit that can
expire; debits take from a named lot first (a reversal of that earn, its expiry) and otherwise from the
lot that expires soonest. What no lot can cover is debt — a reversal of points already spent — which
the next credits pay off first. So at every step: sum of lots' remaining − debt = balance.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

CREDIT_KINDS = ("earn", "adjust", "transfer_in")
KINDS = ("earn", "redeem", "expire", "reverse", "adjust", "transfer_in", "transfer_out")


@dataclass(frozen=True)
class Entry:
    entry_id: UUID
    kind: str
    points: int  # signed
    occurred_at: datetime
    store_id: str | None = None
    lot_key: UUID | None = None  # the lot a credit opens or a debit targets
    expires_at: datetime | None = None  # a credit's lot expiry
    qualifying: int = 0  # points counted toward tier (earns, their reversals and mirrors)
    qualifies_at: datetime | None = None  # when the qualifying points were earned
    seq: int = 0  # posting order, breaking ties of occurred_at


@dataclass
class Lot:
    lot_key: UUID
    store_id: str | None
    earned_at: datetime
    expires_at: datetime | None
    remaining: int


@dataclass
class Holdings:
    lots: dict[UUID, Lot] = field(default_factory=dict)
    debt: int = 0
    debt_by_store: dict[str | None, int] = field(default_factory=dict)

    @property
    def held(self) -> int:
        return sum(lot.remaining for lot in self.lots.values())

    @property
    def balance(self) -> int:
        return self.held - self.debt

    def credit(self, entry: Entry) -> None:
        points = entry.points
        if self.debt:  # debt first: a member in the red earns their way back
            paid = min(self.debt, points)
            self.debt -= paid
            points -= paid
            for store in list(self.debt_by_store):
                take = min(self.debt_by_store[store], paid)
                self.debt_by_store[store] -= take
                paid -= take
                if not self.debt_by_store[store]:
                    del self.debt_by_store[store]
        key = entry.lot_key or entry.entry_id
        lot = self.lots.get(key)
        if not points:
            return
        if lot is None:
            self.lots[key] = Lot(key, entry.store_id, entry.occurred_at, entry.expires_at, points)
        else:
            lot.remaining += points

    def debit(self, entry: Entry) -> None:
        points = -entry.points
        target = self.lots.get(entry.lot_key) if entry.lot_key else None
        if target is not None:
            points -= self._take(target, points)
        for lot in sorted(self.lots.values(), key=_spend_order):
            if not points:
                break
            points -= self._take(lot, points)
        if points:
            self.debt += points
            self.debt_by_store[entry.store_id] = self.debt_by_store.get(entry.store_id, 0) + points

    def _take(self, lot: Lot, points: int) -> int:
        taken = min(lot.remaining, points)
        lot.remaining -= taken
        if not lot.remaining:
            del self.lots[lot.lot_key]
        return taken


def _spend_order(lot: Lot):
    far = datetime.max.replace(tzinfo=lot.earned_at.tzinfo)
    return (lot.expires_at or far, lot.earned_at, str(lot.lot_key))


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.occurred_at, e.seq, str(e.entry_id)))


def holdings(entries: Iterable[Entry]) -> Holdings:
    """Replay a member's entries in event-time order."""
    state = Holdings()
    for entry in ordered(entries):
        if entry.points > 0:
            state.credit(entry)
        elif entry.points < 0:
            state.debit(entry)
    return state


def expiring(state: Holdings, now: datetime) -> list[Lot]:
    """Lots whose expiry has come with points still in them."""
    return [lot for lot in state.lots.values() if lot.expires_at is not None and lot.expires_at <= now]


def earned_in_window(entries: Iterable[Entry], since: datetime) -> int:
    return sum(e.qualifying for e in entries if e.qualifies_at is not None and e.qualifies_at > since)


@dataclass(frozen=True)
class Transfer:
    """Points (and tier-qualifying points) of one lot moving between profiles: a transfer_out on the
    giving profile at `now`, a transfer_in on the receiving one at the lot's own earn time, so it keeps
    its place in the spend order, its expiry and its tier window."""

    lot_key: UUID | None
    points: int
    qualifying: int
    store_id: str | None
    earned_at: datetime
    expires_at: datetime | None
    qualifies_at: datetime | None

    def entries(self, now: datetime, out_id: UUID, in_id: UUID) -> tuple[Entry, Entry]:
        common = dict(store_id=self.store_id, lot_key=self.lot_key, qualifies_at=self.qualifies_at)
        return (Entry(out_id, "transfer_out", -self.points, now, expires_at=None, qualifying=-self.qualifying,
                      **common),
                Entry(in_id, "transfer_in", self.points, self.earned_at, expires_at=self.expires_at,
                      qualifying=self.qualifying, **common))


def merge_transfers(entries: list[Entry], now: datetime) -> list[Transfer]:
    """Everything a merged profile holds: each lot's remaining points with the tier points earned in it,
    and its debt (a negative transfer, which the survivor's lots cover)."""
    state = holdings(entries)
    qualifying = _qualifying_by_lot(entries)
    transfers = []
    for key in sorted(set(state.lots) | set(qualifying), key=str):
        lot = state.lots.get(key)
        q, q_at, first = qualifying.get(key, (0, None, None))
        earned_at = lot.earned_at if lot else first.occurred_at
        transfers.append(Transfer(key, lot.remaining if lot else 0, q, lot.store_id if lot else first.store_id,
                                  earned_at, lot.expires_at if lot else first.expires_at, q_at))
    for store, debt in sorted(state.debt_by_store.items(), key=lambda kv: str(kv[0])):
        transfers.append(Transfer(None, -debt, 0, store, now, None, None))
    return [t for t in transfers if t.points or t.qualifying]


def split_transfers(moved: list[Entry], now: datetime) -> list[Transfer]:
    """The net of the entries that came from moved touchpoints, per lot: an earn and its reversal that
    both moved cancel out; points of a moved earn already spent leave the giving profile owing them."""
    net: dict[UUID | None, list[Entry]] = {}
    for entry in moved:
        net.setdefault(entry.lot_key or entry.entry_id, []).append(entry)
    transfers = []
    for key, group in net.items():
        opening = next((e for e in ordered(group) if e.points > 0 and e.expires_at), group[0])
        points, q = sum(e.points for e in group), sum(e.qualifying for e in group)
        if points or q:
            transfers.append(Transfer(key, points, q, opening.store_id, opening.occurred_at, opening.expires_at,
                                      opening.qualifies_at))
    return transfers


def _qualifying_by_lot(entries: list[Entry]) -> dict:
    """lot key -> (net qualifying points, when they qualified, the entry that opened the lot)."""
    found: dict = {}
    for entry in ordered(entries):
        if not entry.qualifying:
            continue
        key = entry.lot_key or entry.entry_id
        q, at, first = found.get(key, (0, entry.qualifies_at, entry))
        found[key] = (q + entry.qualifying, at, first)
    return {k: v for k, v in found.items() if v[0]}
