"""Match suggestions: profiles whose identifiers or attributes changed are queued; a worker finds
candidates through blocking keys (never all pairs), scores them, and files pairs above the tenant's
threshold for review — or merges them when the tenant enabled auto-merge and the score clears it.
Also the deliberate merge used by an accepted suggestion."""
from __future__ import annotations

import logging
import uuid
from uuid import UUID

import orjson

from services.identity import matching, store
from services.identity.domain import Merge
from services.identity.pii import Vault
from services.identity.errors import Conflict, NotFound
from services.identity.privacy import active_customer
from services.identity.settings import IdentitySettings
from shared import bulk_sql
from shared.bus.outbox import enqueue
from shared.bus.worker import BackgroundWorker
from shared.db import Database
from shared.events import CustomerMerged, utcnow
from shared.events.customers import CustomerMergedPayload
from shared.topics import CUSTOMERS_CHANGES

log = logging.getLogger(__name__)


# One statement for every kind of fact; ids travel as text, since turning each fetched id into a UUID
# object was a third of the match worker's time.
_FACTS = (
    "select customer_id::text, attribute, value_enc, key_id::text, null from identity.profile_attributes "
    " where customer_id = any(%(ids)s::uuid[]) and attribute in ('name', 'birth_date', 'address') "
    "union all select customer_id::text, id_type, value_enc, key_id::text, null from identity.identifiers "
    f" where customer_id = any(%(ids)s::uuid[]) and id_type in {matching.CONTACT_TYPES} and not junk "
    "union all select customer_id::text, 'weak', null, null, token from identity.weak_identifiers "
    " where customer_id = any(%(ids)s::uuid[])")
_FIELD_OF = {"name": "names", "birth_date": "birth_dates", "address": "addresses", "phone": "phones",
             "email": "emails", "weak": "weak_ids"}


def profile_facts(cur, vault: Vault, customer_ids: list[UUID]) -> dict[UUID, matching.ProfileFacts]:
    """What matching may compare, decrypted, for many profiles at once."""
    if not customer_ids:
        return {}
    by_text = {str(c): c for c in customer_ids}
    cur.execute(_FACTS, {"ids": list(by_text)})
    rows = cur.fetchall()
    key_of = {k: by_text.get(k) or UUID(k) for k in {r[3] for r in rows if r[3]}}  # a key id is its customer's
    store.load_keys(cur, vault, key_of.values())
    fields: dict[str, dict[str, list]] = {}
    for cid, kind, value_enc, key_id, token in rows:
        if token is not None:
            value = token
        else:
            try:
                value = vault.decrypt(key_of[key_id], value_enc)
            except KeyError:
                continue
        values = fields.setdefault(cid, {}).setdefault(_FIELD_OF[kind], [])
        if value not in values:
            values.append(value)
    return {c: matching.ProfileFacts(**{k: tuple(v) for k, v in fields[t].items()}) if t in fields
            else matching.ProfileFacts() for t, c in by_text.items()}


def process_queue(db: Database, vault: Vault, settings: IdentitySettings) -> int:
    """Score the next batch of queued profiles; returns how many were taken off the queue. Set-based: a
    handful of statements per batch, not per profile (one per profile was most of the hub's SQL)."""
    with db.transaction() as cur:
        cur.execute("delete from identity.match_queue where customer_id in (select customer_id from "
                    "identity.match_queue order by queued_at limit %s for update skip locked) "
                    "returning customer_id, tenant_id, queued_at", (settings.match_batch,))
        queued = sorted(cur.fetchall(), key=lambda r: r[2])
        if not queued:
            return 0
        cur.execute("select customer_id from identity.customers where customer_id = any(%s) and status = 'active'",
                    ([c for c, *_ in queued],))
        active = {r[0] for r in cur.fetchall()}
        tenants = {c: t for c, t, _ in queued if c in active}
        policies = store.tenant_policies(cur, set(tenants.values()), settings.default_region)
        facts = profile_facts(cur, vault, list(tenants))
        tokens = {cid: sorted({vault.token(tenant, "block", k) for k in matching.blocking_keys(facts[cid])})
                  for cid, tenant in tenants.items()}
        store.replace_blocking_keys(cur, [(tenants[cid], t, cid) for cid, ts in tokens.items() for t in ts],
                                    list(tenants))
        candidates = _candidates(cur, tenants, tokens, settings.match_block_limit, settings.match_candidates)
        facts.update(profile_facts(cur, vault, list({o for others in candidates.values() for o in others} - facts.keys())))
        merged: set[UUID] = set()  # auto-merged in this batch: their facts are stale, their survivor re-queued
        for cid, tenant in tenants.items():  # in queue order
            if cid not in merged:
                others = [o for o in candidates.get(cid, []) if o not in merged]
                merged |= _file_suggestions(cur, vault, policies[tenant], tenant, cid, others, facts)
        return len(queued)


def _candidates(cur, tenants: dict[UUID, str], tokens: dict[UUID, list[str]], block_limit: int,
                most: int) -> dict[UUID, list[UUID]]:
    """Each profile's active candidates: sharing a blocking key held by at most `block_limit` profiles,
    and neither suggested already (unless obsolete) nor blocked as a pair. A pair is proposed once, to
    the profile queued first. At most `most` per profile, those whose shared keys are the rarest (each
    key counts 1 / the profiles holding it): a common full name alone shared with a hundred others says
    little, a birth date with an initial or a postcode says much (meta-blocking)."""
    rows = [(cid, tenants[cid], t) for cid, ts in tokens.items() for t in ts]
    if not rows:
        return {}
    cur.execute(  # ids as text: parsing every row's ids cost more than the query
        "with asked (customer_id, tenant_id, token) as (select * from " + bulk_sql.unnest(("uuid", "text", "text"))
        + "), selective as (select b.tenant_id, b.token, count(*) as holders from identity.blocking_keys b "
        " join (select distinct tenant_id, token from asked) a using (tenant_id, token) "
        " group by b.tenant_id, b.token having count(*) <= %s), "
        "weighed as (select a.customer_id as a, b.customer_id as b, sum(1.0 / s.holders) as weight "
        " from asked a join selective s using (tenant_id, token) "
        " join identity.blocking_keys b on b.tenant_id = a.tenant_id and b.token = a.token "
        " join identity.customers c on c.customer_id = b.customer_id and c.status = 'active' "
        " where b.customer_id <> a.customer_id group by a.customer_id, b.customer_id) "
        "select a::text, b::text from (select a, b, row_number() over (partition by a order by weight desc, b) as rank "
        " from weighed) ranked where rank <= %s",
        (*bulk_sql.columns(rows, 3), block_limit, most),
    )
    found = cur.fetchall()
    text_of = {str(c): c for c in tenants}
    tenant_of = {str(c): t for c, t in tenants.items()}
    pairs = {(tenant_of[c], *sorted((c, o))) for c, o in found}
    # Pairs decided or blocked already, looked up by their keys. As anti-joins in the query above, the
    # planner, misled by a young table's statistics, scanned every suggestion of the tenant per pair.
    cur.execute(
        "with p (tenant_id, a, b) as (select * from " + bulk_sql.unnest(("text", "uuid", "uuid")) + ") "
        "select m.customer_a::text, m.customer_b::text from p join identity.match_suggestions m "
        " on m.tenant_id = p.tenant_id and m.customer_a = p.a and m.customer_b = p.b where m.status <> 'obsolete' "
        "union all select m.customer_a::text, m.customer_b::text from p join identity.merge_blocks m "
        " on m.tenant_id = p.tenant_id and m.customer_a = p.a and m.customer_b = p.b",
        bulk_sql.columns(sorted(pairs), 3))
    proposed = set(cur.fetchall())  # decided pairs count as proposed: they are not proposed again
    by_profile: dict[str, set[str]] = {}
    for cid, other in found:
        by_profile.setdefault(cid, set()).add(other)
    out: dict[UUID, list[UUID]] = {}
    for cid in tenants:  # queue order
        for other in sorted(by_profile.get(str(cid), ())):
            pair = tuple(sorted((str(cid), other)))
            if pair not in proposed:
                proposed.add(pair)
                out.setdefault(cid, []).append(text_of.get(other) or text_of.setdefault(other, UUID(other)))
    return out


def _file_suggestions(cur, vault: Vault, policy, tenant: str, cid: UUID, candidates: list[UUID],
                      facts: dict[UUID, matching.ProfileFacts]) -> set[UUID]:
    """File the pairs that score above the tenant's threshold; returns the profiles auto-merged."""
    for other in candidates:
        result = matching.score(facts[cid], facts[other])
        if result.score < policy.suggest_threshold:
            continue
        a, b = sorted((cid, other))
        auto = policy.auto_merge_threshold is not None and result.score >= policy.auto_merge_threshold
        suggestion = uuid.uuid4()
        cur.execute(
            "insert into identity.match_suggestions (suggestion_id, tenant_id, customer_a, customer_b, score, reasons) "
            "values (%s, %s, %s, %s, %s, %s) on conflict (tenant_id, customer_a, customer_b) do update set "
            "score = excluded.score, reasons = excluded.reasons, status = 'open', created_at = now() "
            "where match_suggestions.status = 'obsolete' returning suggestion_id",
            (suggestion, tenant, a, b, result.score, orjson.dumps({"reasons": result.reasons,
                                                                   "fields": result.fields}).decode()),
        )
        row = cur.fetchone()
        if row and auto:
            merge_pair(cur, vault, tenant, a, b, rule="auto_match", decided_by="matcher",
                       evidence=[{"score": result.score, "reasons": list(result.reasons)}])
            cur.execute("update identity.match_suggestions set status = 'auto_merged', decided_at = now(), "
                        "decided_by = 'matcher' where suggestion_id = %s", (row[0],))
            return {a, b}  # merged now; the survivor is re-queued and matched afresh
    return set()


def merge_pair(cur, vault: Vault, tenant: str, a: UUID, b: UUID, *, rule: str, decided_by: str,
               evidence: list) -> UUID:
    """Merge two profiles on a person's (or the tenant's auto-merge) decision; the oldest survives."""
    a, b = active_customer(cur, tenant, a), active_customer(cur, tenant, b)
    if a == b:
        raise Conflict("these profiles are already one customer")
    locked = store.lock_customers(cur, [a, b])
    survivor, loser = sorted((a, b), key=lambda c: (locked[c][0], str(c)))
    store.apply_merges(cur, [Merge(survivor, [loser], [], [])], {loser: survivor})
    cur.execute("delete from identity.merge_blocks where tenant_id = %s and customer_a = %s and customer_b = %s",
                (tenant, min(a, b), max(a, b)))
    decision = store.record_decision(cur, tenant_id=tenant, kind="merge", rule=rule, customer_id=survivor,
                                     others=[loser], evidence=evidence, event_ids=[], decided_by=decided_by)
    now = utcnow()
    enqueue(cur, store.SCHEMA, [(CUSTOMERS_CHANGES, str(survivor), CustomerMerged(
        event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, tenant_id=tenant, source="identity",
        customer_id=survivor, payload=CustomerMergedPayload(merged_customer_ids=(loser,), rule=rule,
                                                            decision_id=decision)))])
    return survivor


def decide(cur, vault: Vault, tenant: str, suggestion_id: UUID, accept: bool, decided_by: str) -> dict:
    cur.execute("select customer_a, customer_b, status, score, reasons from identity.match_suggestions "
                "where suggestion_id = %s and tenant_id = %s for update", (suggestion_id, tenant))
    row = cur.fetchone()
    if row is None:
        raise NotFound("no such suggestion")
    a, b, status, score, reasons = row
    if status != "open":
        raise Conflict(f"this suggestion is already {status}")
    survivor = None
    if accept:
        survivor = merge_pair(cur, vault, tenant, a, b, rule="suggestion_accepted", decided_by=decided_by,
                              evidence=[{"score": score, **reasons}])
    cur.execute("update identity.match_suggestions set status = %s, decided_at = now(), decided_by = %s "
                "where suggestion_id = %s", ("accepted" if accept else "rejected", decided_by, suggestion_id))
    return {"suggestion_id": suggestion_id, "status": "accepted" if accept else "rejected",
            "customer_id": survivor}


def list_open(cur, tenant: str, limit: int, min_score: float) -> list[dict]:
    cur.execute("select suggestion_id, customer_a, customer_b, score, reasons, created_at from identity.match_suggestions "
                "where tenant_id = %s and status = 'open' and score >= %s order by score desc, created_at limit %s",
                (tenant, min_score, limit))
    return [{"suggestion_id": s, "customer_ids": [a, b], "score": round(score, 4), "reasons": r.get("reasons", []),
             "fields": r.get("fields", {}), "created_at": at} for s, a, b, score, r, at in cur.fetchall()]


class MatchWorker(BackgroundWorker):
    """Keeps suggestions current as profiles arrive, not as a nightly batch."""

    def __init__(self, db: Database, vault: Vault, settings: IdentitySettings):
        super().__init__(name="identity-matcher")
        self.db, self.vault, self.settings = db, vault, settings

    def work(self) -> None:
        while not self._stopping.is_set():
            if process_queue(self.db, self.vault, self.settings) == 0:
                self._stopping.wait(0.5)
            self.last_error = None
