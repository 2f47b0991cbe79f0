"""HTTP basic authentication for the exporter: credential check in constant time.

The password is given either in clear (compared through its SHA-256 digest) or as a hash:
``sha256:<64 hex digits>`` or a bcrypt hash (``$2a$``/``$2b$``/``$2y$``; needs the optional
``bcrypt`` package). Username and password are always both checked, whichever is wrong, and
compared with :func:`hmac.compare_digest` on fixed-length digests, so the response time
does not tell which part or how much of it matched. Secrets never appear in ``repr`` or in
error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
from dataclasses import dataclass, field
from typing import Any

SHA256_PREFIX = "sha256:"
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _load_bcrypt() -> Any:
    try:
        return importlib.import_module("bcrypt")
    except ImportError as exc:
        raise ValueError(
            "a bcrypt password hash needs the 'bcrypt' package; install it or use sha256:<hex>"
        ) from exc


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """Accepted credentials. Build with :meth:`from_password` or :meth:`from_hash`."""

    username: str
    _username_digest: bytes = field(repr=False)
    _sha256_digest: bytes | None = field(default=None, repr=False)
    _bcrypt_hash: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_password(cls, username: str, password: str) -> BasicAuth:
        if not username or not password:
            raise ValueError("basic auth needs a non-empty username and password")
        return cls(username, _sha256(username), _sha256_digest=_sha256(password))

    @classmethod
    def from_hash(cls, username: str, password_hash: str) -> BasicAuth:
        """``password_hash`` is ``sha256:<hex>`` or a bcrypt hash."""
        if not username:
            raise ValueError("basic auth needs a non-empty username")
        if password_hash.startswith(SHA256_PREFIX):
            hex_digest = password_hash[len(SHA256_PREFIX) :]
            try:
                digest = bytes.fromhex(hex_digest)
            except ValueError:
                digest = b""
            if len(digest) != hashlib.sha256().digest_size:
                raise ValueError("sha256 password hash must be 'sha256:' and 64 hex digits")
            return cls(username, _sha256(username), _sha256_digest=digest)
        if password_hash.startswith(BCRYPT_PREFIXES):
            _load_bcrypt()
            return cls(username, _sha256(username), _bcrypt_hash=password_hash.encode("ascii"))
        raise ValueError("unknown password hash format: expected 'sha256:<hex>' or bcrypt")

    def check(self, username: str, password: str) -> bool:
        """True when both match; always does the full amount of work."""
        user_ok = hmac.compare_digest(_sha256(username), self._username_digest)
        if self._bcrypt_hash is not None:
            bcrypt = _load_bcrypt()
            password_ok = bool(bcrypt.checkpw(password.encode("utf-8"), self._bcrypt_hash))
        else:
            assert self._sha256_digest is not None
            password_ok = hmac.compare_digest(_sha256(password), self._sha256_digest)
        return user_ok and password_ok

    def check_header(self, authorization: str | None) -> bool:
        """Check an ``Authorization`` header value; anything malformed is simply refused."""
        if not authorization:
            return False
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        if not sep:
            return False
        return self.check(username, password)
