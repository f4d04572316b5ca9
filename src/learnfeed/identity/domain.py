"""Identity's rules: what a valid email, password and name are; refresh token handling."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from argon2 import PasswordHasher

from cellwork import InvalidArgument
from learnfeed.contract import EMAIL

MIN_PASSWORD = 8
MAX_PASSWORD = 256


def normalize_email(email: str) -> str:
    """Lower-cased, trimmed email; raises InvalidArgument when it is not one."""
    # fullmatch: Python's "$" would also accept a trailing newline, Rust's would not.
    if not EMAIL.fullmatch(email):
        raise InvalidArgument("email is not a valid address")
    return email.strip(" \t").lower()


def check_password(password: str) -> str:
    """The password when acceptable; raises InvalidArgument otherwise."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_name(name: str) -> str:
    """A trimmed display name of 1 to 100 characters; raises InvalidArgument."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidArgument("name must be 1 to 100 characters")
    return name


def new_user_id() -> str:
    return f"u{uuid.uuid4().hex[:20]}"


def new_refresh_token() -> str:
    """An opaque, unguessable refresh token (only its hash is stored)."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    # Refresh tokens are 256 random bits: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode()).hexdigest()


def password_hasher() -> PasswordHasher:
    """argon2id at OWASP's minimum for interactive logins (19 MiB, t=2): ~10-20 ms here."""
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
