"""Messaging: keyed producer, transactional outbox with its relay, and the consumer loop."""
