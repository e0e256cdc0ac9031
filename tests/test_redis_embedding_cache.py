"""Scale-out mode's shared bank embeddings: the first worker publishes them in Redis, a new one reads them.

A real redis-server (tests/redis_server.py) behind the embedding cache of
webapp/embedding_cache.py; tiny random SigLIPs loaded through from_pretrained.
The last test starts two real ``privascan worker`` processes one after the
other: the second never loads the text tower, and neither writes a cache
file on disk.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis
import transformers
from PIL import Image

from plugins.medsiglip import MedSigLIPClassifier
from tests.fleet import drain, environment, output_of, start_worker, stop
from tests.helpers import small_bank
from tests.redis_server import redis_server
from webapp.embedding_cache import EmbeddingCache, cache_from_config
from webapp.fleet import WORKER_PREFIX
from webapp.redis_embedding_cache import PREFIX, RedisBackend

WARM = "the text tower was not loaded"  # the classifier's own log line for a start from the cache


@pytest.fixture
def text_towers_built(monkeypatch):
    """Counts SiglipTextModel constructions (the real constructor still runs)."""
    built = []
    real_init = transformers.SiglipTextModel.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(transformers.SiglipTextModel, "__init__", counting_init)
    return built


def start(model_dir, client: redis.Redis, pairs):
    """What a worker's model manager does at start-up: expect, load, prepare each pair, release."""
    classifier = MedSigLIPClassifier(str(model_dir), device="cpu", embedding_cache=EmbeddingCache(RedisBackend(client)))
    classifier.expect_banks(pairs)
    classifier.load()
    text_tower_loaded = classifier.model.text_model is not None
    for pair in pairs:
        classifier.prepare(*pair)
    classifier.release_text_tower()
    return classifier, text_tower_loaded


def test_the_first_worker_publishes_and_the_next_reads_without_a_text_tower(tiny_model_dir, redis_url, text_towers_built):
    client = redis.Redis.from_url(redis_url)
    bank = small_bank()
    pairs = [(bank, bank.template_set("clinical")), (bank, bank.template_set("dermoscopy"))]
    first, text_loaded = start(tiny_model_dir, client, pairs)
    assert text_loaded and not first.warm_start and len(text_towers_built) == 1
    published = sorted(client.scan_iter(PREFIX + "*"))
    assert len(published) >= 2  # one entry per template set (and the scope prompts, if the bank has them)

    second, text_loaded = start(tiny_model_dir, client, pairs)
    assert second.warm_start and not text_loaded
    assert len(text_towers_built) == 1  # the new worker built no text tower at all
    crop = Image.fromarray(np.random.default_rng(3).integers(0, 256, (448, 448, 3), dtype=np.uint8), "RGB")
    for pair in pairs:
        np.testing.assert_allclose(second.classify(crop, *pair).logits, first.classify(crop, *pair).logits,
                                   rtol=1e-6, atol=1e-6)
    assert sorted(client.scan_iter(PREFIX + "*")) == published  # a hit rewrites nothing

    # An entry altered in Redis is refused on read and recomputed, never used.
    damaged = bytearray(client.get(published[0]))
    damaged[-1] ^= 0xFF
    client.set(published[0], bytes(damaged))
    third, text_loaded = start(tiny_model_dir, client, pairs)
    assert text_loaded and not third.warm_start and len(text_towers_built) == 2
    assert client.get(published[0]) != bytes(damaged)  # replaced by a valid entry
    for pair in pairs:
        np.testing.assert_allclose(third.classify(crop, *pair).logits, first.classify(crop, *pair).logits,
                                   rtol=1e-5, atol=1e-5)


def test_scale_out_mode_keeps_the_cache_in_redis(redis_url, tmp_path):
    cache = cache_from_config({"REDIS_URL": redis_url, "CACHE_DIR": str(tmp_path)})
    assert isinstance(cache.backend, RedisBackend)  # a worker's folder would help no other machine
    assert cache_from_config({"REDIS_URL": redis_url, "CACHE_DIR": "off"}) is None  # off still means off
    cache.backend.put("test-entry", b"bytes")
    assert redis.Redis.from_url(redis_url).get(PREFIX + "test-entry") == b"bytes"
    assert list(tmp_path.iterdir()) == []


def log_of(process) -> str:
    time.sleep(0.2)  # the reader's last lines
    return b"".join(process.tail).decode(errors="replace")


def settled(client: redis.Redis, process, timeout: float = 300) -> dict:
    """The worker's heartbeat once its model is ready and nothing is being prepared in the background."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in client.mget(list(client.scan_iter(WORKER_PREFIX + "*")) or ["none"]):
            beat = json.loads(raw) if raw else None
            if beat and beat["statuses"] and all(s["state"] == "ready" and not s.get("background")
                                                   for s in beat["statuses"].values()):
                return beat
        if process.poll() is not None:
            raise RuntimeError("the worker stopped:\n" + output_of(process))
        time.sleep(0.3)
    raise RuntimeError("the worker did not settle:\n" + output_of(process))


def test_a_second_worker_start_does_not_run_the_text_tower(tiny_model_dir, tmp_path):
    folder = tmp_path / "embedding-cache"  # what a worker would use without Redis: must stay empty
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        env = environment(url, tiny_model_dir, PRIVASCAN_CACHE_DIR=str(folder))
        first = drain(start_worker(env), lines=2000)
        try:
            settled(client, first)
        finally:
            stop(first)
        published = list(client.scan_iter(PREFIX + "*"))
        assert published and WARM not in log_of(first)
        second = drain(start_worker(env), lines=2000)
        try:
            settled(client, second)
        finally:
            stop(second)
        assert WARM in log_of(second), log_of(second)[-3000:]
        assert sorted(client.scan_iter(PREFIX + "*")) == sorted(published)
        client.close()
    assert not folder.exists() or list(folder.iterdir()) == []
