"""Identity's input rules: emails, passwords, names and refresh tokens."""

import pytest

from cellwork import InvalidArgument
from learnfeed.identity import domain as identity


def test_identity_input_rules() -> None:
    assert identity.normalize_email("  Ann@Example.ORG ") == "ann@example.org"
    for bad in ("no-at", "a@b", "a b@c.de", "@c.de"):
        with pytest.raises(InvalidArgument):
            identity.normalize_email(bad)
    with pytest.raises(InvalidArgument):
        identity.check_password("short")
    with pytest.raises(InvalidArgument):
        identity.check_name("   ")
    token = identity.new_refresh_token()
    assert identity.hash_refresh_token(token) != token and len(token) >= 40
