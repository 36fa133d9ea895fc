"""Reads: the customer 360 (golden record with survivorship, identifiers, household, pets and vehicles,
consents, projected facts, touchpoint counts), the timeline, and lookup by identifier. A caller whose
role sees personal data masked (marketing) gets masked values."""
from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from services.identity import store
from services.identity.domain import IdKey, normalise
from services.identity.errors import Gone
from services.identity.pii import Vault, mask
from services.identity.policy import TenantPolicy
from shared.events import Identifier


def _decrypt(vault: Vault, key_id: UUID, blob) -> str | None:
    try:
        return vault.decrypt(key_id, blob)
    except KeyError:
        return None  # the key was destroyed by an erasure


def golden_record(attributes: list[tuple], policy: TenantPolicy, vault: Vault) -> dict:
    """Survivorship per attribute: a verified value beats an unverified one, then the more trusted
    source (tenant's source priority), then the most recent observation."""
    best: dict[str, tuple] = {}
    for name, value_enc, key_id, source, verified, observed_at in attributes:
        rank = (verified, -policy.source_rank(source), observed_at)
        if name not in best or rank > best[name][0]:
            best[name] = (rank, value_enc, key_id, source, verified, observed_at)
    record = {}
    for name, (_, value_enc, key_id, source, verified, observed_at) in best.items():
        value = _decrypt(vault, key_id, value_enc)
        if value is not None:
            record[name] = {"value": value, "source": source, "verified": verified, "observed_at": observed_at}
    return record


def _masked(record: dict, kind: str) -> dict:
    return {**record, "value": mask(kind, record["value"])} if record.get("value") else record


def customer_360(cur, vault: Vault, policy: TenantPolicy, tenant_id: str, requested: UUID,
                 masked: bool = False) -> dict | None:
    found = store.canonical_id(cur, tenant_id, requested)
    if found is None:
        return None
    customer_id, status = found
    cur.execute("select created_at, household_id, erased_at from identity.customers where customer_id = %s",
                (customer_id,))
    created_at, household_id, erased_at = cur.fetchone()
    if status == "erased":
        raise Gone(erased_at)
    cur.execute("select key_id from identity.identifiers where customer_id = %s union "
                "select key_id from identity.profile_attributes where customer_id = %s", (customer_id, customer_id))
    store.load_keys(cur, vault, [r[0] for r in cur.fetchall()] + [customer_id])

    cur.execute("select attribute, value_enc, key_id, source, verified, observed_at "
                "from identity.profile_attributes where customer_id = %s", (customer_id,))
    profile = golden_record(cur.fetchall(), policy, vault)
    identifiers = _identifiers(cur, vault, customer_id)
    for kind in ("phone", "email"):
        own = [i for i in identifiers if i["type"] == kind and not i["shared"] and i["value"]]
        if own:
            latest = max(own, key=lambda i: i["last_seen_at"])
            profile[kind] = {"value": latest["value"], "source": "identifier", "verified": False,
                             "observed_at": latest["last_seen_at"]}
    if masked:
        profile = {k: _masked(v, k) for k, v in profile.items()}
        identifiers = [{**i, "value": mask(i["type"], i["value"] or "")} for i in identifiers]

    facts = _facts(cur, customer_id)
    return {
        "customer_id": customer_id,
        "tenant_id": tenant_id,
        "status": status,
        "resolved_from": requested if requested != customer_id else None,
        "created_at": created_at,
        "merged_ids": _merged_ids(cur, customer_id),
        "profile": profile,
        "identifiers": identifiers,
        "rejected_identifiers": _rejected(cur, customer_id),
        "household": _household(cur, household_id, customer_id),
        "pets": _subjects(cur, vault, customer_id, "pet"),
        "vehicles": _subjects(cur, vault, customer_id, "vehicle", masked),
        "consents": current_consents(cur, customer_id),
        "loyalty": {"tier": facts.get("loyalty_tier"), "points_balance": facts.get("points_balance")},
        "next_booking": _next_booking(cur, customer_id),
        "last_nps": facts.get("last_nps"),
        "lifecycle": facts.get("lifecycle"),
        "churn_risk": facts.get("churn_risk"),
        "touchpoints": _touchpoint_counts(cur, customer_id),
    }


def _identifiers(cur, vault: Vault, customer_id: UUID) -> list[dict]:
    cur.execute("select id_type, id_scope, value_enc, key_id, shared, junk, first_seen_at, last_seen_at "
                "from identity.identifiers where customer_id = %s order by first_seen_at, id_type", (customer_id,))
    strong = [{"type": t, "scope": s or None, "value": _decrypt(vault, k, v), "strength": "strong", "shared": sh,
               "junk": j, "first_seen_at": first, "last_seen_at": last}
              for t, s, v, k, sh, j, first, last in cur.fetchall()]
    cur.execute("select id_type, id_scope, value_enc, key_id, seen_at from identity.weak_identifiers "
                "where customer_id = %s order by seen_at", (customer_id,))
    weak = [{"type": t, "scope": s or None, "value": _decrypt(vault, k, v), "strength": "weak", "shared": False,
             "junk": False, "first_seen_at": seen, "last_seen_at": seen} for t, s, v, k, seen in cur.fetchall()]
    return strong + weak


def _rejected(cur, customer_id: UUID) -> list[dict]:
    cur.execute("select id_type, reason, max(seen_at) from identity.rejected_identifiers where customer_id = %s "
                "group by 1, 2 order by 3 desc limit 50", (customer_id,))
    return [{"type": t, "reason": r, "last_seen_at": at} for t, r, at in cur.fetchall()]


def _merged_ids(cur, customer_id: UUID) -> list[UUID]:
    cur.execute("select customer_id from identity.customers where merged_into = %s order by created_at", (customer_id,))
    return [r[0] for r in cur.fetchall()]


def _household(cur, household_id: UUID | None, customer_id: UUID) -> dict | None:
    if household_id is None:
        return None
    cur.execute("select customer_id from identity.customers where household_id = %s and status = 'active' "
                "and customer_id <> %s order by created_at", (household_id, customer_id))
    return {"household_id": household_id, "members": [r[0] for r in cur.fetchall()]}


def _subjects(cur, vault: Vault, customer_id: UUID, kind: str, masked: bool = False) -> list[dict]:
    cur.execute("select attributes, updated_at from identity.subjects where customer_id = %s and kind = %s "
                "order by updated_at desc", (customer_id, kind))
    out = []
    for attributes, updated_at in cur.fetchall():
        item = dict(attributes)
        if "plate_enc" in item:
            key_id = UUID(item.pop("key_id"))
            store.load_keys(cur, vault, [key_id])
            plate = _decrypt(vault, key_id, base64.b64decode(item.pop("plate_enc")))
            item["plate"] = mask("plate", plate) if masked and plate else plate
        out.append({**item, "updated_at": updated_at})
    return out


def current_consents(cur, customer_id: UUID) -> dict:
    cur.execute("select distinct on (purpose) purpose, granted, source, effective_at from identity.consents "
                "where customer_id = %s order by purpose, effective_at desc, recorded_at desc", (customer_id,))
    return {p: {"granted": g, "source": s, "effective_at": at} for p, g, s, at in cur.fetchall()}


def consent_history(cur, customer_id: UUID) -> list[dict]:
    cur.execute("select purpose, granted, source, evidence, effective_at, recorded_at from identity.consents "
                "where customer_id = %s order by effective_at desc, recorded_at desc", (customer_id,))
    return [{"purpose": p, "granted": g, "source": s, "evidence": e, "effective_at": at, "recorded_at": rec}
            for p, g, s, e, at, rec in cur.fetchall()]


def _facts(cur, customer_id: UUID) -> dict:
    cur.execute("select facts from identity.customer_facts where customer_id = %s", (customer_id,))
    row = cur.fetchone()
    if not row:
        return {}
    return {name: {**fact["value"], "at": fact["at"]} if isinstance(fact["value"], dict) else fact["value"]
            for name, fact in row[0].items()}


def _next_booking(cur, customer_id: UUID) -> dict | None:
    cur.execute("select appointment_id, store_id, service_id, starts_at from identity.customer_appointments "
                "where customer_id = %s and status = 'booked' and starts_at > now() order by starts_at limit 1",
                (customer_id,))
    row = cur.fetchone()
    return dict(zip(("appointment_id", "store_id", "service_id", "starts_at"), row)) if row else None


def _touchpoint_counts(cur, customer_id: UUID) -> dict:
    cur.execute("select channel, count(*), min(occurred_at), max(occurred_at) from identity.resolved_events "
                "where customer_id = %s group by channel", (customer_id,))
    rows = cur.fetchall()
    return {
        "total": sum(r[1] for r in rows),
        "by_channel": {r[0]: r[1] for r in rows},
        "first_at": min((r[2] for r in rows), default=None),
        "last_at": max((r[3] for r in rows), default=None),
    }


def timeline(cur, tenant_id: str, requested: UUID, limit: int, before: tuple[datetime, UUID] | None) -> dict | None:
    """Newest first; `before` is the (occurred_at, event_id) of the last item of the previous page."""
    found = store.canonical_id(cur, tenant_id, requested)
    if found is None:
        return None
    customer_id, status = found
    if status == "erased":
        raise Gone(None)
    params: list = [customer_id]
    page_filter = ""
    if before:
        page_filter = "and (occurred_at, event_id) < (%s, %s)"
        params += list(before)
    cur.execute("select event_id, type, channel, store_id, occurred_at, summary from identity.resolved_events "
                f"where customer_id = %s {page_filter} order by occurred_at desc, event_id desc limit %s",
                (*params, limit + 1))
    rows = cur.fetchall()
    items = [{"event_id": e, "type": t, "channel": c, "store_id": s, "occurred_at": at, "summary": summary}
             for e, t, c, s, at, summary in rows[:limit]]
    return {"customer_id": customer_id, "items": items,
            "next": (items[-1]["occurred_at"], items[-1]["event_id"]) if len(rows) > limit else None}


def identifier_key(policy: TenantPolicy, tenant_id: str, id_type: str, value: str, scope: str | None) -> IdKey:
    ident = normalise(Identifier(type=id_type, value=value, scope=scope), region=policy.default_region,
                      store_id=scope)
    return IdKey(tenant_id, ident.type, ident.scope or "", ident.value)


def lookup(cur, vault: Vault, policy: TenantPolicy, tenant_id: str, id_type: str, value: str,
           scope: str | None) -> UUID | None:
    key = identifier_key(policy, tenant_id, id_type, value, scope)
    return store.find_customer(cur, tenant_id, key.type, key.scope, store.token_of(vault, key))
