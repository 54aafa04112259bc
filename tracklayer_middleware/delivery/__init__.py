"""Delivery: getting committed conversions to X, exactly once as far as X can tell.

The story of one conversion after the request has answered:

1. ``outbox`` (``sqlite_outbox``, ``memory_outbox``; ``celery_backend``/``redis_store`` for
   many hosts) keeps it durably, one row per (pixel, event, conversion_id).
2. ``sender`` claims rows under a lease, batches up to 500 per pixel, and takes one token per
   conversion from ``ratelimit.TokenBucket`` (``redis_ratelimit`` across hosts).
3. ``client.XConversionsClient`` POSTs the batch (``auth``: Bearer, ``X-Pixel-Token`` or
   OAuth 1.0a) and turns whatever happens into a ``SendResult``; it never raises for the
   network and never shows the token.
4. ``policy.decide()`` — pure — says what follows: sent, retry (full-jitter backoff, the same
   conversion_id), pause the pixel (429, 401/403/404), bisect a refused batch, or dead.
5. ``log`` writes one delivery-log entry per conversion per attempt; ``report`` shapes
   ``stats()`` and ``trace()``.
"""
