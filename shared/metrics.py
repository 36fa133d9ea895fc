"""Prometheus counters every service exposes at GET /metrics."""
from prometheus_client import Counter, Histogram

MESSAGES_PROCESSED = Counter(
    "hub_messages_processed_total", "Kafka messages handled successfully", ["service", "topic"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "hub_messages_dead_lettered_total", "Kafka messages sent to a dead-letter topic", ["service", "topic", "reason"]
)
OUTBOX_PUBLISHED = Counter("hub_outbox_published_total", "Outbox rows published to Kafka", ["service"])
HANDLER_RETRIES = Counter(
    "hub_handler_transient_retries_total", "Batches retried after a transient failure", ["service", "topic"]
)
BATCH_SECONDS = Histogram("hub_consumer_batch_seconds", "Time to handle one consumed batch", ["service", "topic"])
WEBHOOK_ATTEMPTS = Counter(
    "hub_webhook_attempts_total", "Webhook delivery attempts by what became of the delivery", ["outcome"]
)
