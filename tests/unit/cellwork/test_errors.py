"""The error table: one row per public code, the same in code, docstring and README."""

import math
import re
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellwork import errors

README = Path(__file__).parents[3] / "README.md"

TABLE = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"),
    (errors.MalformedJson, grpc.StatusCode.INVALID_ARGUMENT, 400, "malformed_json"),
    (errors.ValidationFailed, grpc.StatusCode.INVALID_ARGUMENT, 422, "validation_failed"),
    (errors.PayloadTooLarge, grpc.StatusCode.INVALID_ARGUMENT, 413, "payload_too_large"),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied"),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404, "not_found"),
    (errors.MethodNotAllowed, grpc.StatusCode.UNIMPLEMENTED, 405, "method_not_allowed"),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 409, "conflict"),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503, "unavailable"),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "overloaded"),
    (errors.Internal, grpc.StatusCode.INTERNAL, 500, "internal"),
]


def test_the_table_has_these_rows_in_this_order():
    rows = [(cls, cls.code, cls.http_status, cls.error_code) for cls in errors.PUBLIC_ERRORS]
    assert rows == TABLE


def test_every_public_code_names_one_class():
    codes = [cls.error_code for cls in errors.PUBLIC_ERRORS]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.CANCELLED, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Internal),
        (grpc.StatusCode.UNKNOWN, errors.Internal),
    ],
)
def test_without_a_trailer_a_status_maps_to_its_general_class(status, expected):
    back = errors.error_for_status(status, "why")
    assert type(back) is expected
    assert back.message == "why" and back.retry_after is None


@given(
    st.sampled_from(errors.PUBLIC_ERRORS),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    st.text(max_size=40),
)
def test_the_trailer_rebuilds_the_exact_class_with_its_retry_after(cls, retry_after, message):
    sent = cls(message, retry_after=retry_after)
    back = errors.error_for_status(sent.code, sent.message, errors.error_trailers(sent))
    assert type(back) is cls
    assert back.message == sent.message
    assert back.retry_after == retry_after


def test_rate_limited_and_overloaded_share_a_status_but_not_a_class():
    assert errors.ResourceExhausted.code == errors.Overloaded.code
    limited = errors.error_for_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "x", [("x-cellwork-error", "rate_limited")]
    )
    shed = errors.error_for_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "x", [("x-cellwork-error", b"overloaded")]
    )
    assert type(limited) is errors.ResourceExhausted
    assert type(shed) is errors.Overloaded
    assert isinstance(shed, errors.ResourceExhausted)  # `except ResourceExhausted` backs off too


@pytest.mark.parametrize(
    "trailers",
    [
        [("x-cellwork-error", "not_found")],  # names another status: not trusted
        [("x-cellwork-error", "no_such_code")],
        [("x-cellwork-error", "")],
        [("x-cellwork-retry-after", "soon")],
        [("x-cellwork-retry-after", "-3")],
        [("x-cellwork-retry-after", "nan")],
        [("x-cellwork-retry-after", "inf")],
        [("unrelated-bin", b"\x00\xff")],
    ],
)
def test_a_foreign_or_broken_trailer_falls_back_to_the_status(trailers):
    back = errors.error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailers)
    assert type(back) is errors.ResourceExhausted
    assert back.retry_after is None


def test_the_trailer_carries_retry_after_only_when_the_error_has_one():
    assert errors.error_trailers(errors.NotFound("x")) == (("x-cellwork-error", "not_found"),)
    assert errors.error_trailers(errors.Overloaded("x", retry_after=2)) == (
        ("x-cellwork-error", "overloaded"),
        ("x-cellwork-retry-after", "2.0"),
    )


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_retry_after_must_be_a_finite_non_negative_number_of_seconds(bad):
    with pytest.raises(ValueError, match="retry_after"):
        errors.Overloaded("x", retry_after=bad)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.InvalidArgument),
        (404, errors.NotFound),
        (405, errors.MethodNotAllowed),
        (409, errors.FailedPrecondition),  # the general 409, not already_exists
        (413, errors.PayloadTooLarge),
        (422, errors.ValidationFailed),
        (429, errors.ResourceExhausted),
        (503, errors.Unavailable),  # the general 503, not overloaded
        (415, errors.InvalidArgument),  # no row: the 4xx family's class
        (418, errors.InvalidArgument),
        (501, errors.Internal),
    ],
)
def test_an_http_status_maps_to_its_general_class(status, expected):
    assert type(errors.error_for_http_status(status, "x")) is expected


def test_an_error_without_a_message_says_its_code():
    assert errors.Overloaded().message == "overloaded"


def test_no_endpoints_is_an_unavailable_with_its_code():
    assert issubclass(errors.NoEndpoints, errors.Unavailable)
    assert errors.NoEndpoints("x").error_code == "unavailable"
    assert errors.NoEndpoints("x").code == grpc.StatusCode.UNAVAILABLE


def test_the_docstring_draws_every_row():
    doc = errors.__doc__ or ""
    for cls, status, http, code in TABLE:
        pattern = rf"\b{cls.__name__}\s+{status.name}\s+{http}\s+{code}\s*$"
        assert re.search(pattern, doc, re.MULTILINE), cls.__name__


def _readme_error_rows() -> list[tuple[str, str, int, str]]:
    text = README.read_text()
    section = text.split("### Errors", 1)[1]
    header = "| class | gRPC status | HTTP status | code |"
    lines = section.split(header, 1)[1].splitlines()[2:]  # skip the header's rule
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows.append((cells[0], cells[1], int(cells[2]), cells[3]))
    return rows


def test_the_readme_table_matches_the_error_table_row_for_row():
    expected = [
        (cls.__name__, cls.code.name, cls.http_status, cls.error_code)
        for cls in errors.PUBLIC_ERRORS
    ]
    assert _readme_error_rows() == expected
