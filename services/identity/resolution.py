"""Resolution of consumed touchpoints: one transaction per batch gives every touchpoint its customer,
merges profiles that share a strong identifier, links households, keeps the 360 projection, and
publishes the resolved copies and customer changes through the outbox. Idempotent on event_id."""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from services.identity import matching, projection, store
from services.identity.domain import Classified, Plan, Resolver, classify
from services.identity.pii import BatchVault, Vault
from services.identity.policy import TenantPolicy
from services.identity.settings import IdentitySettings
from shared import bulk_sql
from shared.bus.consumer import Delivery
from shared.db import Database
from shared.events import CustomerCreated, CustomerMerged, DecodeError, Touchpoint, TraceContext, encode, utcnow
from shared.events.customers import CustomerCreatedPayload, CustomerMergedPayload
from shared.telemetry import carrier_for_span, context_from_carrier, tracer
from shared.topics import CUSTOMERS_CHANGES, TOUCHPOINTS_RESOLVED

_tracer = tracer("identity")


def resolve_touchpoints(deliveries: list[Delivery], db: Database, settings: IdentitySettings, vault: Vault) -> None:
    spans = {
        d.event.event_id: _tracer.start_span(
            "touchpoint.resolve", context=context_from_carrier(d.trace),
            attributes={"event.id": str(d.event.event_id), "event.type": d.event.type})
        for d in deliveries
    }
    try:
        events = [d.event for d in deliveries if isinstance(d.event, Touchpoint)]
        if len(events) != len(deliveries):
            raise DecodeError("touchpoints.raw carries only touchpoints")
        with db.transaction() as cur:
            resolve_events(cur, events, settings, vault, lambda e: TraceContext(**carrier_for_span(spans[e])))
    finally:
        for span in spans.values():
            span.end()


def resolve_events(cur, events: list[Touchpoint], settings: IdentitySettings, vault: Vault, trace_of=None,
                   classified: Mapping[UUID, tuple[TenantPolicy, Classified]] | None = None,
                   bulk: bool = False) -> Plan:
    """Resolve in the caller's transaction (the consumer and the bulk importer share this).
    `classified`: event id -> (policy, classification) the caller already made (the importer screens
    every row), used when the tenant's policy is still that one. `bulk`: see store.lock_tokens."""
    now = utcnow()
    vault = BatchVault(vault)
    done = store.already_resolved(cur, [(e.tenant_id, e.event_id) for e in events])
    policies = store.tenant_policies(cur, {e.tenant_id for e in events}, settings.default_region)
    same: dict[tuple[int, int], bool] = {}  # (id of the caller's policy, id of this batch's): equal?
    items, seen = [], set()
    for e in events:
        if (e.tenant_id, e.event_id) in done or e.event_id in seen:
            continue  # redelivered: its outbox rows were written when it was first resolved
        seen.add(e.event_id)
        policy = policies[e.tenant_id]
        prior = classified.get(e.event_id) if classified else None
        if prior is not None:
            key = (id(prior[0]), id(policy))
            if key not in same:
                same[key] = prior[0] == policy
            if same[key]:
                items.append(prior[1])
                continue
        items.append(classify(e, policy))
    if not items:
        return Plan()
    strong = {store.token_of(vault, k): k for i in items for k in i.strong}
    weak = {store.token_of(vault, k): k for i in items for k in i.weak}
    store.lock_tokens(cur, list(strong) + list(weak), bulk=bulk)
    snapshot = store.load_snapshot(cur, strong, weak)
    plan = Resolver(snapshot, policies.__getitem__, uuid.uuid4, now).run(items)
    _persist(cur, vault, items, plan, now, trace_of)
    return plan


def _persist(cur, vault: Vault, items: list[Classified], plan: Plan, now: datetime, trace_of) -> None:
    tenant_of = {i.event.event_id: i.event.tenant_id for i in items}
    store.insert_customers(cur, vault, [(cid, e.tenant_id, now, e.event_id) for cid, e in plan.new_customers.items()])
    final = {loser: plan.canonical(loser) for m in plan.merges for loser in m.losers}
    store.apply_merges(cur, plan.merges, final)
    store.load_keys(cur, vault, {*plan.links.values(), *(c for _, c in plan.weak_links),
                                 *plan.customer_of.values()})
    # Links planned before a later merge in the same batch point at the survivor.
    store.link_identifiers(cur, vault, {k: plan.canonical(c) for k, c in plan.links.items()}, now)
    store.link_weak(cur, vault, {(k, plan.canonical(c)) for k, c in plan.weak_links}, now)
    store.mark_shared(cur, vault, plan.shared)
    _record_rejected(cur, vault, plan, tenant_of, now)

    outbox = []
    for cid, first in plan.new_customers.items():
        outbox.append((CUSTOMERS_CHANGES, str(cid), CustomerCreated(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=first.tenant_id, source="identity",
            customer_id=cid, trace=first.trace,
            payload=CustomerCreatedPayload(identifier_types=tuple(sorted({i.type for i in first.identifiers})),
                                           first_event_id=first.event_id))))
    decisions = store.Decisions()
    for merge in plan.merges:
        tenant = tenant_of[merge.event_ids[0]]
        survivor = plan.canonical(merge.survivor)
        evidence = [{"type": k.type, "token": store.token_of(vault, k)} for k in merge.evidence]
        decision = decisions.add(tenant_id=tenant, kind="merge", rule="shared_strong_identifier",
                                 customer_id=survivor, others=merge.losers, evidence=evidence,
                                 event_ids=merge.event_ids)
        outbox.append((CUSTOMERS_CHANGES, str(survivor), CustomerMerged(
            event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant, source="identity",
            customer_id=survivor,
            payload=CustomerMergedPayload(merged_customer_ids=tuple(merge.losers), rule="shared_strong_identifier",
                                          triggering_event_ids=tuple(merge.event_ids), decision_id=decision,
                                          evidence_identifier_types=tuple(sorted({k.type for k in merge.evidence}))))))
    for link in plan.households:
        a, b = plan.canonical(link.customer_id), plan.canonical(link.other_id)
        if a != b:
            store.link_household(cur, a, b)
            decisions.add(tenant_id=link.via.tenant_id, kind="household", rule="shared_identifier",
                          customer_id=a, others=[b], event_ids=[link.event_id],
                          evidence=[{"type": link.via.type, "token": store.token_of(vault, link.via)}])
    for key, owner in plan.shared.items():
        if owner.junk:
            decisions.add(tenant_id=key.tenant_id, kind="junk_identifier", rule="too_many_people",
                          customer_id=plan.canonical(owner.customer_id), others=[], event_ids=[],
                          evidence=[{"type": key.type, "token": store.token_of(vault, key),
                                     "linked_people": owner.linked_count}])
    decisions.write(cur)

    customer_of = plan.customer_of
    projection.record_timeline(cur, vault, items, customer_of)
    changed = projection.record_profiles(cur, vault, items, customer_of)
    outbox.extend((CUSTOMERS_CHANGES, str(e.customer_id), e)
                  for e in projection.record_consents(cur, items, customer_of, now))
    projection.record_facts(cur, items, customer_of)
    # Re-matched when what matching compares changed: a new profile, new attributes, a newly held phone,
    # e-mail or weak identifier (a car seen again under its known plate changes nothing).
    rematch = (changed | plan.new_customers.keys() | {plan.canonical(c) for _, c in plan.weak_links}
               | {plan.canonical(c) for key, c in plan.links.items() if key.type in matching.CONTACT_TYPES})
    store.queue_for_matching(cur, {(customer_of[i.event.event_id], i.event.tenant_id) for i in items
                                   if customer_of[i.event.event_id] in rematch})
    for item in items:
        cid = customer_of[item.event.event_id]
        trace = trace_of(item.event.event_id) if trace_of else item.event.trace
        outbox.append((TOUCHPOINTS_RESOLVED, str(cid), projection.redacted(item, vault, cid, trace)))
    _enqueue(cur, outbox)


def _record_rejected(cur, vault: Vault, plan: Plan, tenant_of: dict[UUID, str], now: datetime) -> None:
    rows = []
    for event_id, rejected in plan.rejected:
        cid = plan.customer_of[event_id]
        rows.append((tenant_of[event_id], cid, event_id, rejected.type, vault.encrypt(cid, rejected.value), cid,
                     rejected.reason, now))
    store.record_rejected(cur, rows)


def _enqueue(cur, items: list) -> None:
    """The rows `shared.bus.outbox.enqueue` writes (the relay reads them), by COPY: a resolved batch
    writes one or two outbox rows per touchpoint, and VALUES formatting was much of a batch's time."""
    bulk_sql.copy_rows(cur, f'"{store.SCHEMA}".outbox', ("topic", "msg_key", "event_id", "event_type", "body", "trace"),
                       [(spec.name, key.encode(), event.event_id, event.type, encode(event),
                         event.trace.model_dump(exclude_none=True) if event.trace else {})
                        for spec, key, event in items])
