"""A dead letter's headers tell its story, and read back as the same record."""

from cellwork.events.deadletters import ERROR_LIMIT, DeadLetter, dead_letter_headers


def headers(error: str = "Unavailable('down')", msg_id: str = "ev-1") -> dict[str, str]:
    return dead_letter_headers(
        subject="orders.new",
        stream="ORDERS",
        sequence=42,
        durable="workers",
        reason="transient_exhausted",
        error=error,
        deliveries=17,
        first_seen=1000.25,
        msg_id=msg_id,
    )


def test_a_dead_letter_reads_back_from_its_headers() -> None:
    letter = DeadLetter.of(7, headers(), b"payload", stored_at=1300.0)
    assert letter == DeadLetter(
        seq=7,
        subject="orders.new",
        stream="ORDERS",
        durable="workers",
        reason="transient_exhausted",
        error="Unavailable('down')",
        deliveries=17,
        first_seen=1000.25,
        dead_lettered_at=1300.0,
        original_msg_id="ev-1",
        data=b"payload",
    )
    assert letter.age(now=1010.25) == 10.0
    assert letter.as_json(now=1010.25)["age_seconds"] == 10.0


def test_the_dedupe_id_names_the_original_message_and_the_replay_names_the_dead_letter() -> None:
    assert headers()["Nats-Msg-Id"] == "workers:ORDERS:42"
    letter = DeadLetter.of(7, headers(), b"", stored_at=0.0)
    assert letter.replay_msg_id() == "replay:ORDERS:workers:7"


def test_the_error_is_one_line_and_truncated() -> None:
    error = headers(error="line one\nline two " + "x" * 2000)["Cellwork-Error"]
    assert "\n" not in error and error.startswith("line one line two")
    assert len(error) == ERROR_LIMIT


def test_a_message_without_an_id_carries_no_original_id_header() -> None:
    assert "Cellwork-Original-Msg-Id" not in headers(msg_id="")


def test_an_older_dead_letter_without_the_headers_reads_as_empty() -> None:
    letter = DeadLetter.of(3, {"Cellwork-Subject": "orders.bad"}, b"x", stored_at=5.0)
    assert (letter.subject, letter.reason, letter.deliveries, letter.first_seen) == (
        "orders.bad",
        "",
        0,
        0.0,
    )
