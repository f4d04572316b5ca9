"""JWT access tokens: issue and verify (PyJWT), with key ids so keys can rotate.

Verification pins the algorithm to HS256, so ``alg: none`` and algorithm
confusion are refused; ``exp``, ``iat``, ``sub``, ``aud`` and ``iss`` are required.
Every failure raises ``Unauthenticated`` with a short reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cachetools import LRUCache

from cellwork.errors import Unauthenticated

ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says."""

    sub: str
    exp: int
    iat: int


@dataclass(frozen=True, slots=True)
class JwtKeys:
    """Signing keys by key id; ``active`` signs, every listed key verifies."""

    keys: dict[str, str]
    active: str

    @classmethod
    def parse(cls, spec: str, active: str = "") -> JwtKeys:
        """Read ``kid1:secret1,kid2:secret2`` (or a bare secret, kid ``k1``)."""
        keys: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, secret = part.partition(":")
            if not sep:
                kid, secret = "k1", part
            if len(secret) < 32:
                raise ValueError(f"JWT key {kid!r} is shorter than 32 characters")
            keys[kid] = secret
        if not keys:
            raise ValueError("no JWT keys configured")
        chosen = active or next(iter(keys))
        if chosen not in keys:
            raise ValueError(f"active JWT key id {chosen!r} is not among the keys")
        return cls(keys, chosen)


class JwtCodec:
    """Issues and verifies access tokens for one issuer and audience."""

    def __init__(
        self,
        keys: JwtKeys,
        *,
        issuer: str,
        audience: str,
        ttl: int = 900,
        cache_size: int = 100_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        # Verifying a signature costs ~40 us; a client sends the same token for its whole
        # life, so verified tokens are remembered (expiry is still checked on every use).
        self._verified: LRUCache[str, Claims] = LRUCache(maxsize=cache_size)

    def issue(self, subject: str, now: float | None = None) -> str:
        """A signed access token for ``subject``, valid for ``ttl`` seconds."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": subject,
            "iat": issued,
            "exp": issued + self.ttl,
            "aud": self.audience,
            "iss": self.issuer,
        }
        kid = self.keys.active
        return jwt.encode(claims, self.keys.keys[kid], algorithm=ALGORITHM, headers={"kid": kid})

    def verify(self, token: str, now: float | None = None) -> Claims:
        """The claims of a valid token; raises Unauthenticated otherwise."""
        known = self._verified.get(token)
        if known is not None:
            if known.exp <= (time.time() if now is None else now):
                raise Unauthenticated("token expired")
            return known
        claims = self._verify_signed(token)
        self._verified[token] = claims
        return claims

    def _verify_signed(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("token algorithm not accepted")
        key = self.keys.keys.get(str(header.get("kid", "")))
        if key is None:
            raise Unauthenticated("unknown token key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer not accepted") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthenticated("invalid token subject")
        return Claims(sub=sub, exp=int(claims["exp"]), iat=int(claims["iat"]))


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header; raises Unauthenticated."""
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token.strip()
