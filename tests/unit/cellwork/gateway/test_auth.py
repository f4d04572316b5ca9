"""JWT rules: key ids and rotation, refused claims, bearer headers, remembered tokens."""

import time

import jwt
import pytest

from cellwork import Unauthenticated
from cellwork.gateway import JwtCodec, JwtKeys
from cellwork.gateway.auth import bearer_token

KEYS = JwtKeys.parse(
    "old:old-secret-0123456789abcdef-0123456789,new:new-secret-0123456789abcdef-0123456789", "new"
)


def codec(keys: JwtKeys = KEYS, **kw) -> JwtCodec:
    return JwtCodec(keys, issuer="iss", audience="aud", ttl=kw.pop("ttl", 60), **kw)


def test_an_issued_token_verifies_with_its_subject_and_key_id() -> None:
    token = codec().issue("u1")
    assert jwt.get_unverified_header(token)["kid"] == "new"
    claims = codec().verify(token)
    assert claims.sub == "u1" and claims.exp - claims.iat == 60


def test_tokens_signed_with_a_retired_but_listed_key_still_verify() -> None:
    old_only = JwtKeys.parse("old:old-secret-0123456789abcdef-0123456789")
    token = codec(old_only).issue("u1")
    assert codec().verify(token).sub == "u1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": "other"}, "audience"),
        ({"iss": "other"}, "issuer"),
        ({"exp": int(time.time()) - 10}, "expired"),
    ],
)
def test_wrong_claims_are_refused(change: dict, reason: str) -> None:
    now = int(time.time())
    claims = {"sub": "u", "iat": now, "exp": now + 60, "aud": "aud", "iss": "iss", **change}
    token = jwt.encode(claims, KEYS.keys["new"], algorithm="HS256", headers={"kid": "new"})
    with pytest.raises(Unauthenticated, match=reason):
        codec().verify(token)


def test_missing_claims_alg_none_and_unknown_keys_are_refused() -> None:
    now = int(time.time())
    no_sub = jwt.encode(
        {"iat": now, "exp": now + 60, "aud": "aud", "iss": "iss"},
        KEYS.keys["new"],
        algorithm="HS256",
        headers={"kid": "new"},
    )
    unsigned = jwt.encode(
        {"sub": "u", "iat": now, "exp": now + 60, "aud": "aud", "iss": "iss"},
        None,
        algorithm="none",
    )
    unknown = codec(JwtKeys.parse("zz:zz-secret-0123456789abcdefgh-0123456789")).issue("u")
    for token in (no_sub, unsigned, unknown, "a.b.c", ""):
        with pytest.raises(Unauthenticated):
            codec().verify(token)


def test_key_specs_are_checked() -> None:
    with pytest.raises(ValueError, match="shorter"):
        JwtKeys.parse("k:short")
    with pytest.raises(ValueError, match="active"):
        JwtKeys.parse("k:0123456789abcdefgh-0123456789abcdef", "missing")
    assert JwtKeys.parse("0123456789abcdefgh-0123456789abcdef").keys == {
        "k1": "0123456789abcdefgh-0123456789abcdef"
    }


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer  "):
        with pytest.raises(Unauthenticated):
            bearer_token(bad)


def test_a_remembered_token_still_expires() -> None:
    c = codec(ttl=60)
    token = c.issue("u1", now=time.time())
    assert c.verify(token).sub == "u1"  # verified and remembered
    with pytest.raises(Unauthenticated, match="expired"):
        c.verify(token, now=time.time() + 61)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(Unauthenticated):
        c.verify(tampered)
