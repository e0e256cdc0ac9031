"""AES-GCM for what a session keeps in Redis, with a key only its browser holds.

Scale-out mode keeps photos, results and live state in Redis. Each session
gets its own random 256-bit key; the server never stores it: the browser
keeps it in a second HttpOnly cookie (``privascan_key``) and sends it with
every request, and a worker sees it only inside the job it is running,
wrapped under a key derived from the deployment's shared secret. A copy of
Redis's memory therefore holds ciphertext whose key is elsewhere.

Every value is sealed with its Redis location as associated data, so a blob
cannot be moved to another session or another field and still open. GCM also
authenticates: what Redis hands back is unpickled only after its tag checked
out, so someone able to write to Redis cannot feed the app a forged pickle.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12  # GCM's standard nonce; random per value (at most a few thousand per key)
KEY_COOKIE = "privascan_key"


class CannotOpen(Exception):
    """The key is wrong or the value was altered or moved: treat the value as absent."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, context: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode())


def unseal(key: bytes, sealed: bytes, context: str) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise CannotOpen()
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
    except InvalidTag:
        raise CannotOpen() from None


def key_to_cookie(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def key_from_cookie(text: str | None) -> bytes | None:
    if not text or len(text) > 64:
        return None
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _job_wrapping_key(app_secret: str) -> bytes:
    """A key for jobs only, derived from PRIVASCAN_SECRET_KEY (shared by web replicas and workers)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"privascan job key wrap v1").derive(
        app_secret.encode()
    )


def wrap_for_job(app_secret: str, session_key: bytes, store_id: str) -> str:
    """The session key as it travels in a queued job: sealed, so the broker's copy is useless alone."""
    sealed = seal(_job_wrapping_key(app_secret), session_key, f"job-key:{store_id}")
    return base64.b64encode(sealed).decode("ascii")


def unwrap_from_job(app_secret: str, wrapped: str, store_id: str) -> bytes:
    try:
        sealed = base64.b64decode(wrapped)
    except (binascii.Error, ValueError):
        raise CannotOpen() from None
    return unseal(_job_wrapping_key(app_secret), sealed, f"job-key:{store_id}")
