"""Delivery: outbox, sender, retry policy, X client, delivery log."""
