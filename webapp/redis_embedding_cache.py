"""The embedding cache's Redis backend: a new worker reads the bank embeddings the first one published.

In scale-out mode (``PRIVASCAN_REDIS_URL``, docs/scaling.md) every
``privascan worker`` would otherwise spend minutes in the text tower at each
start. With this backend behind ``webapp.embedding_cache.EmbeddingCache``
the first worker computes a bank's embeddings and publishes them; a worker
started later, on any machine, reads them and loads the vision tower only.

Keys: ``privascan:embeddings:<entry key>``, the entry key being the cache's
own (kind and the sha256 of the identity: the weights' fingerprint, the exact
prompts of the bank and template set, the text recipe), so other weights or
a changed bank never find a stale entry. A value is model-derived (class
embeddings, the logit scale and bias), never anything about a patient, so it
is not sealed; each carries its identity and checksum, which the cache
checks on every read, so an altered entry is recomputed, never used.

No TTL: the set of entries is bounded (one per weights, bank and template
set; MedSigLIP's dermatology bank is about 0.4 MB), and Redis runs without
persistence, so a Redis restart empties it and the next worker start simply
computes again. A Redis that is full (``noeviction``) refuses the write; the
cache logs that and the worker goes on with what it computed.
"""

from __future__ import annotations

import redis

PREFIX = "privascan:embeddings:"


class RedisBackend:
    """``CacheBackend`` (get/put bytes by key) on a Redis string per entry; SET replaces atomically."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def get(self, key: str) -> bytes | None:
        return self.client.get(PREFIX + key)

    def put(self, key: str, data: bytes) -> None:
        self.client.set(PREFIX + key, data)

    def __repr__(self) -> str:
        return f"Redis ({PREFIX}*)"


def redis_backend(url: str) -> RedisBackend:
    from .redis_connection import connect

    return RedisBackend(connect(url))
