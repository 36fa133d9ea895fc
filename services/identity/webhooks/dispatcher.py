"""The dispatcher: sends queued deliveries to their subscribers.

- One pump per subscription, owned by one replica at a time (a Postgres advisory lock), with its own
  connection pool and concurrency limit: a subscriber that hangs or is down for hours only ever holds
  its own slots, never another subscriber's or the pipeline's.
- Per customer, in order: a customer's deliveries form a lane and only the lane's head is in flight or
  waiting for its retry; other customers' lanes go on.
- A failure (non-2xx, timeout, closed connection) is retried after exponentially growing delays with
  jitter, for more than 24 hours by default; after the last attempt the delivery becomes a dead letter
  and the lane moves on.
- Consent and erasure are checked right before every send, a batch of lanes at a time.
- Outcomes are written back every few milliseconds; at least once: a delivery whose 2xx was not yet
  written when the process died is sent again, with the same Idempotency-Key.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import orjson
import uvloop
import yarl
from psycopg2.extras import execute_values

from services.identity.pii import Vault
from services.identity.webhooks import subscriptions
from services.identity.webhooks.audience import blocked, is_compliance_notice
from services.identity.webhooks.signing import SIGNATURE_HEADER, Signer
from shared.bus.worker import BackgroundWorker
from shared.db import Database
from shared.events import utcnow
from shared.events.customers import CustomerConsentChanged
from shared.metrics import WEBHOOK_ATTEMPTS

log = logging.getLogger(__name__)
_CONTACT_TYPES = ("phone", "email", "wechat_openid", "wechat_unionid")
_LOCK_SALT = 0x5EB0_0C
RECHECK_S = 1.0  # how stale a customer's consent check may be when their next delivery goes out
# After this many failures in a row the receiver looks down: one probe at a time, at doubling intervals
# up to BREAKER_MAX_PROBE_S, instead of every customer's lane retrying on its own.
BREAKER_AFTER = 20
BREAKER_MAX_PROBE_S = 300.0


@dataclass(frozen=True)
class DispatchPolicy:
    retry_delays_s: tuple[float, ...]
    jitter: float
    timeout_s: float
    concurrency: int
    max_loaded: int = 20_000
    tick_s: float = 0.02
    secret_grace: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=14)
    prune_every_s: float = 300.0

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_s) + 1

    def delay(self, failed_attempts: int) -> float:
        base = self.retry_delays_s[min(failed_attempts, len(self.retry_delays_s)) - 1]
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass
class Queued:
    delivery_id: int
    event_id: UUID
    event_type: str
    customer_id: UUID | None
    body: bytes
    attempts: int
    due: float  # epoch seconds
    first_attempt_at: datetime | None

    @property
    def lane(self):
        return self.customer_id or f"delivery:{self.delivery_id}"

    @property
    def notice_purpose(self) -> str | None:
        if self.event_type != CustomerConsentChanged.type_name():
            return None
        return orjson.loads(self.body)["payload"]["purpose"]


@dataclass
class Subscription:
    subscription_id: UUID
    url: str
    state: str
    purpose: str
    pii_level: str
    secrets: list[str]

    def __post_init__(self):
        self.signer, self.target = Signer(self.secrets), yarl.URL(self.url)  # once, not per request


class Pump:
    """Everything one subscription has queued, loaded in order, sent lane by lane."""

    def __init__(self, subscription: Subscription, dispatcher: "Dispatcher"):
        self.subscription, self.dispatcher = subscription, dispatcher
        self.policy, self.clock, self.db = dispatcher.policy, dispatcher.clock, dispatcher.db
        self.lanes: dict[object, deque[Queued]] = {}
        self.retrying: list[tuple[float, int, object]] = []  # (due, delivery id, lane): heads waiting to retry
        self.unchecked: set = set()  # lanes whose head is due, to pass the consent check before sending
        self.ready: deque = deque()
        self.loaded = self.loaded_upto = self.in_flight = 0
        self.outcomes: list[tuple] = []
        self.attempt_rows: list[tuple] = []
        self.contacts: dict[UUID, dict] = {}
        self.checked_at: dict[object, float] = {}
        self.failures_in_row, self.probe_at, self.probes, self.probes_sent = 0, 0.0, set(), 0
        self.wake = asyncio.Event()
        self.stopped = False
        self.next_load_at = 0.0
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.policy.concurrency, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s), skip_auto_headers=("User-Agent",))

    def now(self) -> float:
        return self.clock().timestamp()

    async def run(self) -> None:
        """Sends never wait for the database: loading, consent checks and writing outcomes back run as
        background jobs (one of each at a time) while requests are in flight."""
        last_flush, jobs = time.monotonic(), {}

        def start(name: str, job) -> None:
            if name not in jobs or jobs[name].done():
                jobs[name] = asyncio.ensure_future(self._guarded(name, job))

        try:
            while not self.stopped:
                if self.subscription.state == "active":
                    if self.loaded < self.policy.max_loaded // 2 and time.monotonic() >= self.next_load_at:
                        start("load", self._load)
                    self._promote_due()
                    if self.unchecked:
                        start("check", self._check)
                    while self.ready and self.in_flight < self.policy.concurrency:
                        lane = self.ready.popleft()
                        if self.breaker_open and lane not in self.probes:  # wait for a probe to get through
                            heapq.heappush(self.retrying, (self.now(), self.lanes[lane][0].delivery_id, lane))
                            continue
                        self.probes.discard(lane)
                        self.in_flight += 1
                        asyncio.ensure_future(self._send(lane))
                if self.outcomes and (time.monotonic() - last_flush > 0.05 or len(self.outcomes) > 500):
                    start("flush", self.flush)
                    last_flush = time.monotonic()
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.policy.tick_s)
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(*jobs.values(), return_exceptions=True)
            while self.in_flight:
                await asyncio.sleep(0.01)
            await self.flush()
            await self.session.close()

    async def _guarded(self, name: str, job) -> None:
        try:
            await job()
        except Exception as exc:  # the database is away: the job runs again after a pause
            self.dispatcher.last_error = f"webhook {name}: {exc!r}"
            log.warning("webhook %s failed for %s: %r", name, self.subscription.subscription_id, exc)
            await asyncio.sleep(1.0)
        finally:
            self.wake.set()

    # --- loading and checking: the queries run in a thread, their results are applied on the loop ---
    async def _load(self) -> None:
        self._take(await asyncio.to_thread(self._fetch))

    def _fetch(self) -> list[tuple]:
        with self.db.transaction() as cur:
            cur.execute(
                "select delivery_id, event_id, event_type, customer_id, body, attempts, "
                "extract(epoch from next_attempt_at), first_attempt_at from identity.webhook_deliveries "
                "where subscription_id = %s and state = 'pending' and delivery_id > %s and body is not null "
                "order by delivery_id limit %s",
                (self.subscription.subscription_id, self.loaded_upto, self.policy.max_loaded - self.loaded))
            return cur.fetchall()

    def _take(self, rows: list[tuple]) -> None:
        # Nothing new: look again in a quarter second rather than every tick.
        self.next_load_at = 0.0 if rows else time.monotonic() + 0.25
        for delivery_id, event_id, event_type, customer_id, body, attempts, due, first in rows:
            queued = Queued(delivery_id, event_id, event_type, customer_id, bytes(body), attempts, float(due), first)
            lane = self.lanes.get(queued.lane)
            if lane is None:
                self.lanes[queued.lane] = deque([queued])
                self._schedule(queued.lane)
            else:
                lane.append(queued)
            self.loaded += 1
            self.loaded_upto = delivery_id

    @property
    def breaker_open(self) -> bool:
        return self.failures_in_row >= BREAKER_AFTER

    def _schedule(self, lane) -> None:
        head = self.lanes[lane][0]
        if head.due <= self.now() and not self.breaker_open:
            self.unchecked.add(lane)
        else:
            heapq.heappush(self.retrying, (head.due, head.delivery_id, lane))

    def _promote_due(self) -> None:
        now = self.now()
        if self.breaker_open:
            if now >= self.probe_at and self.retrying and self.retrying[0][0] <= now:
                probe = heapq.heappop(self.retrying)[2]
                self.unchecked.add(probe)
                self.probes.add(probe)
                self.probe_at = now + min(2.0 ** self.probes_sent, BREAKER_MAX_PROBE_S)
                self.probes_sent += 1
            return
        while self.retrying and self.retrying[0][0] <= now:
            self.unchecked.add(heapq.heappop(self.retrying)[2])

    def _audience(self, customers: set[UUID]) -> tuple[dict, dict]:
        with self.db.transaction() as cur:
            refused = blocked(cur, customers, {self.subscription.purpose})
            contacts = contact_points(cur, self.dispatcher.vault, customers - {c for c, _ in refused}) \
                if self.subscription.pii_level != "none" else {}
        return refused, contacts

    async def _check(self) -> None:
        """Consent and erasure for the lanes about to send. A refused customer's loaded deliveries are
        dropped with the reason, all but compliance notices, which still go."""
        lanes, self.unchecked = self.unchecked, set()
        purpose = self.subscription.purpose
        try:
            refused, contacts = await asyncio.to_thread(self._audience, {x for x in lanes if isinstance(x, UUID)})
        except Exception:
            self.unchecked |= lanes
            raise
        self.contacts.update(contacts)  # kept while the lane has deliveries
        at, checked = self.clock(), time.monotonic()
        for lane in lanes:
            reason = refused.get((lane, purpose))
            queue = self.lanes[lane]
            while reason and queue and not is_compliance_notice(queue[0].event_type, queue[0].notice_purpose,
                                                                 purpose):
                head = queue[0]
                self.outcomes.append((head.delivery_id, "dropped", head.attempts, at, head.first_attempt_at,
                                      None, None, None, reason, at))
                self._pop(lane)
            if lane in self.lanes:
                self.checked_at[lane] = checked
                self.ready.append(lane)

    def _advance(self, lane) -> None:
        """The head is done (delivered, dead or dropped): the next one in the lane goes out at once if the
        customer passed the consent check within the last RECHECK_S, else after a fresh check."""
        self._pop(lane)
        if lane in self.lanes:
            if self.breaker_open:
                self._schedule(lane)
            elif time.monotonic() - self.checked_at.get(lane, 0.0) < RECHECK_S:
                self.ready.append(lane)
            else:
                self.unchecked.add(lane)

    def _pop(self, lane) -> None:
        queue = self.lanes[lane]
        queue.popleft()
        self.loaded -= 1
        if not queue:
            del self.lanes[lane]
            self.contacts.pop(lane, None)
            self.checked_at.pop(lane, None)

    # --- sending ---
    def _body(self, queued: Queued) -> bytes:
        level = self.subscription.pii_level
        if level == "none" or queued.customer_id is None:
            return queued.body
        points = self.contacts.get(queued.customer_id, {})
        if level == "hashed":
            points = {f"{kind}_sha256": [hashlib.sha256(v.encode()).hexdigest() for v in values]
                      for kind, values in points.items() if kind in ("phone", "email")}
        return orjson.dumps({**orjson.loads(queued.body), "contact": points})

    async def _send(self, lane) -> None:
        queued = self.lanes[lane][0]
        attempt = queued.attempts + 1
        body = self._body(queued)
        attempted_at = self.clock()
        headers = {
            "Content-Type": "application/json", "User-Agent": "customer-hub-webhooks/1",
            SIGNATURE_HEADER: self.subscription.signer.header(int(attempted_at.timestamp()), body),
            "Idempotency-Key": str(queued.event_id), "Hub-Event-Id": str(queued.event_id),
            "Hub-Event-Type": queued.event_type, "Hub-Subscription-Id": str(self.subscription.subscription_id),
            "Hub-Delivery-Id": str(queued.delivery_id), "Hub-Attempt": str(attempt),
        }
        status, error, started = None, None, time.monotonic()
        try:
            async with self.session.post(self.subscription.target, data=body, headers=headers,
                                         allow_redirects=False) as response:
                status = response.status
                await response.content.read(4096)  # a little of the answer; the rest is not ours to wait for
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        except Exception as exc:  # never let one delivery end the pump
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency_ms = (time.monotonic() - started) * 1000
        try:
            self._record(lane, queued, attempt, attempted_at, status, error, latency_ms)
        finally:
            self.in_flight -= 1
            self.wake.set()

    def _record(self, lane, queued: Queued, attempt: int, attempted_at: datetime, status: int | None,
                error: str | None, latency_ms: float) -> None:
        first = queued.first_attempt_at or attempted_at
        self.attempt_rows.append((queued.delivery_id, attempt, attempted_at, status, latency_ms, error))
        done_at = self.clock()
        delivered = status is not None and 200 <= status < 300
        # Only silence, 5xx and 429 say the receiver is down; a 4xx is an answer about this one event.
        down = status is None or status >= 500 or status == 429
        if not down and self.breaker_open:  # a probe got through: everyone waiting may go now
            now = self.now()
            self.retrying = [(min(due, now), delivery_id, waiting) for due, delivery_id, waiting in self.retrying]
            heapq.heapify(self.retrying)
        self.failures_in_row = self.failures_in_row + 1 if down else 0
        if not down:
            self.probes_sent = 0
        if delivered:
            outcome = ("delivered", attempt, done_at, first, status, None, latency_ms, None, done_at)
            self._advance(lane)
        elif attempt >= self.policy.max_attempts:
            reason = f"gave up after {attempt} attempts; last: {status or error}"
            outcome = ("dead", attempt, done_at, first, status, error, latency_ms, reason, done_at)
            self._advance(lane)
        else:
            queued.attempts, queued.first_attempt_at = attempt, first
            queued.due = attempted_at.timestamp() + self.policy.delay(attempt)
            outcome = ("pending", attempt, datetime.fromtimestamp(queued.due, UTC), first, status, error, latency_ms,
                       None, None)
            heapq.heappush(self.retrying, (queued.due, queued.delivery_id, lane))
        WEBHOOK_ATTEMPTS.labels(outcome[0]).inc()
        self.outcomes.append((queued.delivery_id, *outcome))

    async def flush(self) -> None:
        """Write outcomes back; if the database is away they are kept and written next time."""
        outcomes, attempts = self.outcomes, self.attempt_rows
        if not outcomes and not attempts:
            return
        self.outcomes, self.attempt_rows = [], []
        try:
            await asyncio.to_thread(write_outcomes, self.db, outcomes, attempts)
        except Exception as exc:
            log.warning("writing webhook outcomes failed, keeping them: %r", exc)
            self.outcomes, self.attempt_rows = outcomes + self.outcomes, attempts + self.attempt_rows


def write_outcomes(db: Database, outcomes: list[tuple], attempts: list[tuple]) -> None:
    latest = {row[0]: row for row in outcomes}  # several outcomes of one delivery in a batch: the last counts
    with db.transaction() as cur:
        if attempts:
            execute_values(cur, "insert into identity.webhook_attempts (delivery_id, attempt, attempted_at, "
                                "status_code, latency_ms, error) values %s on conflict do nothing", attempts,
                           page_size=1000)
        if latest:
            # Only a pending row changes: one that an erasure or a deletion dropped meanwhile stays dropped.
            execute_values(
                cur, "update identity.webhook_deliveries d set state = v.state, attempts = v.attempts, "
                     "next_attempt_at = v.next_at, first_attempt_at = v.first_at, last_status = v.status, "
                     "last_error = v.error, last_latency_ms = v.latency, reason = v.reason, finished_at = v.done_at "
                     "from (values %s) v(id, state, attempts, next_at, first_at, status, error, latency, reason, done_at) "
                     "where d.delivery_id = v.id and d.state = 'pending'",
                list(latest.values()), page_size=1000,
                template="(%s, %s, %s, %s::timestamptz, %s::timestamptz, %s::integer, %s, %s::real, %s, %s::timestamptz)")


def contact_points(cur, vault: Vault, customer_ids: set[UUID]) -> dict[UUID, dict[str, list[str]]]:
    """The customers' own contact identifiers (not shared, not junk), decrypted."""
    if not customer_ids:
        return {}
    cur.execute(
        "select c.customer_id, i.id_type, i.value_enc, i.key_id, k.wrapped_key from identity.customers c "
        "join identity.identifiers i on i.customer_id = coalesce(c.merged_into, c.customer_id) "
        "join identity.customer_keys k on k.key_id = i.key_id "
        "where c.customer_id = any(%s) and i.id_type = any(%s) and not i.shared and not i.junk "
        "order by i.first_seen_at", (list(customer_ids), list(_CONTACT_TYPES)))
    found: dict[UUID, dict[str, list[str]]] = {}
    for customer_id, kind, value_enc, key_id, wrapped in cur.fetchall():
        if not vault.has_key(key_id):
            vault.load_key(key_id, bytes(wrapped))
        found.setdefault(customer_id, {}).setdefault(kind, []).append(vault.decrypt(key_id, value_enc))
    return found


class Dispatcher(BackgroundWorker):
    def __init__(self, db: Database, vault: Vault, policy: DispatchPolicy, clock: Callable[[], datetime] = utcnow,
                 refresh_s: float = 0.5):
        super().__init__(name="webhook-dispatcher")
        self.db, self.vault, self.policy, self.clock, self.refresh_s = db, vault, policy, clock, refresh_s
        self.pumps: dict[UUID, tuple[Pump, asyncio.Task]] = {}

    def work(self) -> None:
        # uvloop: the dispatcher is mostly event-loop and socket work, which it does about twice as fast.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        next_prune = 0.0
        with self.db.connection() as locks:  # session advisory locks: who owns which subscription
            locks.autocommit = True
            try:
                while not self._stopping.is_set():
                    if time.monotonic() >= next_prune:
                        await asyncio.to_thread(self.prune)
                        next_prune = time.monotonic() + self.policy.prune_every_s
                    current, gained = await asyncio.to_thread(self._claim, locks)
                    for subscription_id in [s for s in self.pumps if s not in current]:  # deleted
                        self._stop_pump(subscription_id)
                        await asyncio.to_thread(_unlock, locks, subscription_id)
                    for subscription_id, subscription in current.items():
                        if subscription_id in self.pumps:
                            self.pumps[subscription_id][0].subscription = subscription
                        elif subscription_id in gained:
                            pump = Pump(subscription, self)
                            self.pumps[subscription_id] = (pump, asyncio.ensure_future(pump.run()))
                    self.last_error = None
                    await asyncio.sleep(self.refresh_s)
            finally:
                tasks = [task for _, task in self.pumps.values()]
                for subscription_id in list(self.pumps):
                    self._stop_pump(subscription_id)
                await asyncio.gather(*tasks, return_exceptions=True)
                with locks.cursor() as cur:
                    cur.execute("select pg_advisory_unlock_all()")

    def prune(self) -> int:
        """Finished deliveries older than the retention leave the log, a batch at a time."""
        pruned = 0
        while True:
            with self.db.transaction() as cur:
                batch = subscriptions.prune(cur, self.clock() - self.policy.retention)
            pruned += batch
            if batch < 10_000:
                return pruned

    def _stop_pump(self, subscription_id: UUID) -> None:
        pump, _ = self.pumps.pop(subscription_id)
        pump.stopped = True
        pump.wake.set()

    def _claim(self, locks) -> tuple[dict[UUID, Subscription], set[UUID]]:
        """The live subscriptions, and those of them this replica just took ownership of."""
        now = self.clock()
        with self.db.transaction() as cur:
            cur.execute("select subscription_id, url, state, purpose, pii_level, secret_enc, previous_secret_enc, "
                        "previous_secret_until from identity.webhook_subscriptions where state <> 'deleted'")
            current = {r[0]: Subscription(r[0], r[1], r[2], r[3], r[4], subscriptions.signing_secrets(
                self.vault, r[0], r[5], r[6], r[7], now)) for r in cur.fetchall()}
        gained = set()
        with locks.cursor() as cur:
            for subscription_id in current.keys() - self.pumps.keys():
                cur.execute("select pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_SALT, str(subscription_id)))
                if cur.fetchone()[0]:
                    gained.add(subscription_id)
        return current, gained


def _unlock(locks, subscription_id: UUID) -> None:
    with locks.cursor() as cur:
        cur.execute("select pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_SALT, str(subscription_id)))
