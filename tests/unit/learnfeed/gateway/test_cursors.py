"""Feed page cursors: opaque to clients, and a bad one is the client's error."""

import pytest

from cellwork import InvalidArgument
from learnfeed.gateway.cursors import decode_cursor, encode_cursor


def test_cursors_round_trip_and_bad_ones_are_invalid_arguments() -> None:
    assert decode_cursor(encode_cursor(7, 40)) == 40
    for bad in ("%%%", "abc", encode_cursor(1, -5), "MTox"[:3]):
        with pytest.raises(InvalidArgument):
            decode_cursor(bad)
