"""Split (unmerge): chosen identifiers move to a new or named profile together with every past
touchpoint that carried them and what those touchpoints contributed; the pair is never merged
automatically again; the split is a stored decision announced on customers.changes."""
from __future__ import annotations

import uuid
from uuid import UUID

from services.identity import store
from services.identity.domain import IdKey
from services.identity.pii import Vault
from services.identity.policy import TenantPolicy
from services.identity.errors import Conflict, NotFound
from services.identity.privacy import active_customer
from services.identity.profiles import identifier_key
from shared.bus.outbox import enqueue
from shared.events import CustomerCreated, CustomerSplit, utcnow
from shared.events.customers import CustomerCreatedPayload, CustomerSplitPayload
from shared.topics import CUSTOMERS_CHANGES

EVENTS_PER_ANNOUNCEMENT = 500


def split_customer(cur, vault: Vault, policy: TenantPolicy, tenant_id: str, requested: UUID,
                   identifiers: list[tuple[str, str, str | None]], target: UUID | None, reason: str,
                   decided_by: str) -> dict:
    source = store.canonical_id(cur, tenant_id, requested)
    if source is None:
        raise NotFound("no such customer")
    if source[0] != requested:
        raise Conflict(f"customer {requested} was merged into {source[0]}: split {source[0]} instead")
    source = active_customer(cur, tenant_id, requested)
    keys = [identifier_key(policy, tenant_id, t, v, s) for t, v, s in identifiers]
    tokens = {store.token_of(vault, k): k for k in keys}
    store.lock_tokens(cur, tokens)
    held = _held(cur, source, tokens)
    missing = [k for t, k in tokens.items() if t not in held]
    if missing:
        raise Conflict("the customer does not hold " + ", ".join(f"{k.type} {k.value}" for k in missing))

    now = utcnow()
    outbox = []
    if target is None:
        target = uuid.uuid4()
        store.lock_customers(cur, [source])
        store.insert_customers(cur, vault, [(target, tenant_id, now, None)])
        outbox.append((CUSTOMERS_CHANGES, str(target), CustomerCreated(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant_id, source="identity",
            customer_id=target, payload=CustomerCreatedPayload(
                identifier_types=tuple(sorted({k.type for k in keys})), rule="split"))))
    else:
        if store.canonical_id(cur, tenant_id, target) != (target, "active"):
            raise Conflict(f"target {target} is not an active customer of this tenant")
        if target == source:
            raise Conflict("target is the customer being split")
        store.lock_customers(cur, [source, target])
    store.load_keys(cur, vault, [target, *(k for _, k in held.values())])

    for token, (table, key_id) in held.items():
        _move_identifier(cur, vault, table, tokens[token], token, source, target, key_id)
    cur.execute("update identity.resolved_events set customer_id = %s where customer_id = %s and tokens && %s "
                "returning event_id", (target, source, list(tokens)))
    moved_events = [r[0] for r in cur.fetchall()]
    _move_contributions(cur, vault, moved_events, source, target)
    a, b = sorted((source, target))
    cur.execute("insert into identity.merge_blocks (tenant_id, customer_a, customer_b) values (%s, %s, %s) "
                "on conflict do nothing", (tenant_id, a, b))
    decision = store.record_decision(
        cur, tenant_id=tenant_id, kind="split", rule="manual_split", customer_id=source, others=[target],
        evidence=[{"type": k.type, "token": t} for t, k in tokens.items()] + [{"reason": reason}],
        event_ids=[], decided_by=decided_by)
    store.queue_for_matching(cur, {(source, tenant_id), (target, tenant_id)})
    chunks = [moved_events[i:i + EVENTS_PER_ANNOUNCEMENT]
              for i in range(0, len(moved_events), EVENTS_PER_ANNOUNCEMENT)] or [[]]
    for part, chunk in enumerate(chunks, 1):
        outbox.append((CUSTOMERS_CHANGES, str(source), CustomerSplit(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant_id, source="identity",
            customer_id=source, payload=CustomerSplitPayload(
                new_customer_id=target, moved_identifier_types=tuple(sorted({k.type for k in keys})),
                moved_event_ids=tuple(chunk), part=part, parts=len(chunks), decision_id=decision, reason=reason))))
    enqueue(cur, store.SCHEMA, outbox)
    return {"customer_id": source, "new_customer_id": target, "decision_id": decision,
            "moved_identifiers": len(tokens), "moved_events": len(moved_events)}


def _held(cur, customer_id: UUID, tokens: dict[str, IdKey]) -> dict[str, tuple[str, UUID]]:
    cur.execute("select token, 'identifiers', key_id from identity.identifiers where customer_id = %s "
                "and token = any(%s) union all select token, 'weak_identifiers', key_id "
                "from identity.weak_identifiers where customer_id = %s and token = any(%s)",
                (customer_id, list(tokens), customer_id, list(tokens)))
    return {t: (table, key_id) for t, table, key_id in cur.fetchall()}


def _move_identifier(cur, vault: Vault, table: str, key: IdKey, token: str, source: UUID, target: UUID,
                     key_id: UUID) -> None:
    """Re-encrypted under the target's key, so erasing either profile later erases only its own data."""
    value_enc = vault.encrypt(target, key.value)
    extra = ", shared = false, linked_count = 0" if table == "identifiers" else ""
    cur.execute(f"update identity.{table} set customer_id = %s, value_enc = %s, key_id = %s{extra} "
                "where customer_id = %s and token = %s", (target, value_enc, target, source, token))


def _move_contributions(cur, vault: Vault, event_ids: list[UUID], source: UUID, target: UUID) -> None:
    if not event_ids:
        return
    for table in ("profile_attributes", "rejected_identifiers"):
        cur.execute(f"select ctid, value_enc, key_id from identity.{table} where customer_id = %s "
                    "and event_id = any(%s)", (source, event_ids))
        rows = cur.fetchall()
        store.load_keys(cur, vault, [k for _, _, k in rows if k])
        for ctid, value_enc, key_id in rows:
            value = vault.encrypt(target, vault.decrypt(key_id, value_enc)) if value_enc else None
            cur.execute(f"update identity.{table} set customer_id = %s, value_enc = %s, key_id = %s where ctid = %s",
                        (target, value, target, ctid))
    cur.execute("update identity.consents set customer_id = %s where customer_id = %s and event_id = any(%s)",
                (target, source, event_ids))
