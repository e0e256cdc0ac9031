"""Configuration: defaults, overridden by PRIVASCAN_* environment variables.

Every setting an operator may change is read here and nowhere else, so the
README's configuration table can be checked against one file.
"""

from __future__ import annotations

import os
import secrets

DEFAULT_PLUGINS = ("plugins.medsiglip", "plugins.dermatology", "plugins.chest_xray")


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _live_batch(value: str) -> str | int:
    value = value.strip().lower() or "auto"
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"PRIVASCAN_LIVE_BATCH must be 'auto' or a whole number of frames from 1; got {value!r}")
    return int(value)


def _api_key_hashes() -> tuple[bytes, ...]:
    from .api_access import key_hashes

    return key_hashes(os.environ.get("PRIVASCAN_API_KEYS"))


def config_from_environment() -> dict:
    """Read the operator's settings; called by create_app() before test_config applies."""
    allow = os.environ.get("PRIVASCAN_PLUGINS")
    return {
        # A per-process key: sessions live in this process's memory only, so
        # they cannot outlive a restart anyway and nothing needs a stable key.
        # Scale-out mode needs one key shared by all web replicas and workers
        # (it wraps the session keys inside queued jobs), so it must be set.
        "SECRET_KEY": os.environ.get("PRIVASCAN_SECRET_KEY") or secrets.token_hex(32),
        "SECRET_KEY_GENERATED": not os.environ.get("PRIVASCAN_SECRET_KEY"),
        # Unset: the embedded store and worker (the default). Set (redis:// or
        # rediss://, password or ACL user in the URL): scale-out mode.
        "REDIS_URL": os.environ.get("PRIVASCAN_REDIS_URL") or None,
        # Scale-out mode: a job a worker took but never acknowledged (it was
        # killed) is handed to another worker after this many seconds.
        "JOB_VISIBILITY_SECONDS": int(_number("PRIVASCAN_JOB_VISIBILITY_SECONDS", 600)),
        # Scale-out mode: a photo still "running" this long after its worker
        # started it is shown as failed (its worker never came back, and no
        # other worker took the job over). 0: the visibility timeout plus a minute,
        # so a redelivery gets its chance first.
        "JOB_DEADLINE_SECONDS": int(_number("PRIVASCAN_JOB_DEADLINE_SECONDS", 0)),
        "MODEL": os.environ.get("PRIVASCAN_MODEL", "google/medsiglip-448"),
        "HF_TOKEN": os.environ.get("HF_TOKEN") or None,
        "DEMO_MODEL": _flag("PRIVASCAN_DEMO_MODEL"),
        # Dynamic int8 for classification without a heatmap (CPU; heatmaps stay fp32).
        "INT8": _flag("PRIVASCAN_INT8"),
        # CUDA only: classification without a heatmap under bf16/fp16 autocast (heatmaps stay fp32).
        "CUDA_HALF": _flag("PRIVASCAN_CUDA_HALF", True),
        # Folder of the bank text embeddings kept between runs (webapp/embedding_cache.py):
        # model-derived, written at start-up only. Unset: ~/.cache/privascan/embeddings
        # (or $XDG_CACHE_HOME/privascan/embeddings); "off": nothing is kept.
        "CACHE_DIR": os.environ.get("PRIVASCAN_CACHE_DIR") or None,
        "LESION_WEIGHTS": os.environ.get("PRIVASCAN_LESION_WEIGHTS") or None,
        "BANK_OVERRIDES": os.environ.get("PRIVASCAN_BANK_OVERRIDES") or None,  # TOML from `privascan eval --fit-thresholds`
        "ADAPTER": os.environ.get("PRIVASCAN_ADAPTER") or None,  # file from `privascan adapt`
        "CLINICAL_APP": os.environ.get("PRIVASCAN_CLINICAL_APP", "dermatology"),
        "DEFAULT_PLUGINS": DEFAULT_PLUGINS,
        # None: load every installed entry-point plugin; otherwise only these names.
        "PLUGIN_ALLOWLIST": None if allow is None else tuple(p.strip() for p in allow.split(",") if p.strip()),
        "LOAD_MODELS_AT_START": _flag("PRIVASCAN_LOAD_MODELS", True),
        "SESSION_IDLE_MINUTES": _number("PRIVASCAN_SESSION_IDLE_MINUTES", 30),
        "SESSION_LIFETIME_HOURS": _number("PRIVASCAN_SESSION_LIFETIME_HOURS", 12),
        "MAX_SESSIONS": int(_number("PRIVASCAN_MAX_SESSIONS", 200)),
        "MAX_PHOTOS_PER_SESSION": int(_number("PRIVASCAN_MAX_PHOTOS", 40)),
        "MAX_SESSION_BYTES": int(_number("PRIVASCAN_MAX_SESSION_MB", 200) * 1024 * 1024),
        # All sessions together: without it the two caps above allow 40 GB.
        "MAX_TOTAL_BYTES": int(_number("PRIVASCAN_MAX_TOTAL_MB", 2048) * 1024 * 1024),
        # Browsers holding a session cookie (a few hundred bytes each); when
        # full, newcomers are asked to come back rather than others evicted.
        "MAX_VISITORS": int(_number("PRIVASCAN_MAX_VISITORS", 10_000)),
        "MAX_FILE_BYTES": int(_number("PRIVASCAN_MAX_FILE_MB", 20) * 1024 * 1024),
        # Whole request; werkzeug answers 413 before reading a larger body.
        "MAX_CONTENT_LENGTH": int(_number("PRIVASCAN_MAX_REQUEST_MB", 64) * 1024 * 1024),
        "MAX_FORM_PARTS": int(_number("PRIVASCAN_MAX_FORM_PARTS", 100)),
        "MAX_IMAGE_PIXELS": int(_number("PRIVASCAN_MAX_IMAGE_MEGAPIXELS", 50) * 1_000_000),
        # Decoding (webapp/decoding.py): decodes at once, their estimated memory together, and how
        # long a request may wait for its turn before it is told the server is busy.
        "DECODE_SLOTS": int(_number("PRIVASCAN_DECODE_SLOTS", 2)),
        "DECODE_MEMORY_BYTES": int(_number("PRIVASCAN_DECODE_MB", 600) * 1024 * 1024),
        "DECODE_WAIT_SECONDS": _number("PRIVASCAN_DECODE_WAIT_SECONDS", 30),
        "QUEUE_SIZE": int(_number("PRIVASCAN_QUEUE_SIZE", 16)),
        # Seconds the JSON API waits for its analysis before answering 503 (the job is then cancelled).
        "API_TIMEOUT": _number("PRIVASCAN_API_TIMEOUT", 600),
        # Live scan. The browser sends frames of at most 640 px, so these bounds are
        # generous for a real camera and small enough that a flood of frames cannot
        # exhaust memory. Smoothing: an alert needs LIVE_NEEDED of the last
        # LIVE_WINDOW frames at its threshold, and clears LIVE_GAP below it.
        "LIVE_MAX_FRAME_BYTES": int(_number("PRIVASCAN_LIVE_MAX_FRAME_MB", 2) * 1024 * 1024),
        "LIVE_MAX_FRAME_PIXELS": int(_number("PRIVASCAN_LIVE_MAX_FRAME_MEGAPIXELS", 2) * 1_000_000),
        "LIVE_FRAME_TIMEOUT": _number("PRIVASCAN_LIVE_FRAME_TIMEOUT", 60),  # seconds a frame may wait for the worker
        "LIVE_EXPLAIN_TIMEOUT": _number("PRIVASCAN_LIVE_EXPLAIN_TIMEOUT", 180),
        "LIVE_WINDOW": int(_number("PRIVASCAN_LIVE_WINDOW", 5)),
        "LIVE_NEEDED": int(_number("PRIVASCAN_LIVE_NEEDED", 3)),
        "LIVE_GAP": _number("PRIVASCAN_LIVE_GAP", 0.05),
        "LIVE_LOG_LIMIT": int(_number("PRIVASCAN_LIVE_LOG_LIMIT", 500)),  # alerts kept per session
        # Waiting live frames of any sessions classified in one forward: "auto" batches on a GPU only
        # (webapp.jobs.live_batch_limit), a number sets the most per batch (1: never batch).
        "LIVE_BATCH": _live_batch(os.environ.get("PRIVASCAN_LIVE_BATCH", "auto")),
        # Cosine similarity of two crops' image embeddings from which "same lesion?" is asked (docs/lesions.md).
        "SAME_LESION_SIMILARITY": _number("PRIVASCAN_SAME_LESION_SIMILARITY", 0.90),
        # Per client address (webapp/rate_limit.py): every request, and those that decode or analyse an image.
        "RATE_LIMIT_ENABLED": _flag("PRIVASCAN_RATE_LIMIT_ENABLED", True),
        "RATE_LIMIT": os.environ.get("PRIVASCAN_RATE_LIMIT", "100 per second;6000 per minute"),
        "RATE_LIMIT_UPLOADS": os.environ.get("PRIVASCAN_RATE_LIMIT_UPLOADS", "60 per minute"),
        # PRIVASCAN_API_KEYS, comma-separated: only their SHA-256 is kept (webapp/api_access.py).
        "API_KEY_HASHES": _api_key_hashes(),
        "FRAME_ANCESTORS": os.environ.get("PRIVASCAN_FRAME_ANCESTORS", "'none'"),
        "SESSION_COOKIE_SECURE": _flag("PRIVASCAN_SECURE_COOKIE", True),
        # Behind a TLS-terminating reverse proxy: trust its X-Forwarded-* headers.
        "BEHIND_PROXY": _flag("PRIVASCAN_BEHIND_PROXY"),
        # The production server (`make run`, `privascan serve`; webapp/gunicorn_conf.py, webapp/server.py).
        "BIND": os.environ.get("PRIVASCAN_BIND") or "127.0.0.1:5000",
        # A connection must send all its request headers within this many seconds (from
        # connecting, or from the previous response when kept alive), and then its body
        # within BODY_TIMEOUT; otherwise it is closed. Slow or idle clients hold no thread.
        "HEADER_TIMEOUT": _number("PRIVASCAN_HEADER_TIMEOUT", 10),
        "BODY_TIMEOUT": _number("PRIVASCAN_BODY_TIMEOUT", 120),
    }
