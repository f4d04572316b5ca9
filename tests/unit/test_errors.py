import grpc
import pytest

from cellwork import errors


@pytest.mark.parametrize(
    ("cls", "status", "http"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (errors.Internal, grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_each_domain_error_maps_to_one_grpc_status_and_back(cls, status, http):
    assert cls.code == status
    assert cls.http_status == http
    back = errors.error_for_status(status, "why")
    assert type(back) is cls
    assert back.message == "why"


def test_unknown_status_becomes_internal():
    assert type(errors.error_for_status(grpc.StatusCode.UNKNOWN, "x")) is errors.Internal


def test_no_endpoints_is_an_unavailable():
    assert issubclass(errors.NoEndpoints, errors.Unavailable)
    assert errors.NoEndpoints("x").code == grpc.StatusCode.UNAVAILABLE
