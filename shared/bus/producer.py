"""Kafka producer and topic administration (kafka-python)."""
from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared.topics import TopicSpec

log = logging.getLogger(__name__)


def make_producer(bootstrap_servers: str, client_id: str) -> KafkaProducer:
    """acks=all so an acknowledged send survives a broker failover; keys keep per-customer order."""
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=1,  # keeps order per partition across retries
        retries=10,
        request_timeout_ms=15_000,
    )


def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec], prefix: str = "", timeout_s: float = 30,
                  replication_factor: int = 1) -> None:
    """Create the topics that do not exist yet; safe to call from every service at start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="hub-admin")
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name=f"{prefix}{s.name}", num_partitions=s.partitions, replication_factor=replication_factor)
            for s in specs if f"{prefix}{s.name}" not in existing
        ]
        for topic in missing:
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass  # another service created it meanwhile
        if missing:
            log.info("created topics %s", [t.name for t in missing])
        wanted = {f"{prefix}{s.name}": s.partitions for s in specs if f"{prefix}{s.name}" in existing}
        for topic in admin.describe_topics(list(wanted)) if wanted else ():
            if len(topic["partitions"]) != wanted[topic["name"]]:  # e.g. auto-created by a client's metadata request
                log.warning("topic %s has %d partitions, the registry says %d: keys spread differently and "
                            "consumers scale differently than planned", topic["name"], len(topic["partitions"]),
                            wanted[topic["name"]])
    finally:
        admin.close()
