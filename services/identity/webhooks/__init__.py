"""Webhook subscriptions: downstream tools receive public events over HTTP, signed, retried for a day
and more, in order per customer, only for customers who consented to the subscription's purpose."""
