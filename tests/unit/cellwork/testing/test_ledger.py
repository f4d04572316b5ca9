"""The event ledger's verdicts: delivered, lost, doubled."""

from cellwork.testing.ledger import EventLedger


def test_an_id_missing_from_any_source_is_lost_and_one_held_twice_is_doubled() -> None:
    ledger = EventLedger()
    for event_id in ("a", "b", "c", "d"):
        ledger.accept(event_id)
    store = {"a": 1, "b": 1, "c": 1}
    stream = {"a": 1, "b": 2, "c": 1, "d": 1, "x": 5}  # x was never accepted: not ours
    report = ledger.reconcile(store, stream)
    assert report.lost == ("d",)
    assert report.doubled == ("b",)
    assert report.accepted == 4 and report.delivered == 2
    assert not report.clean


async def test_settle_waits_for_a_consumer_that_catches_up() -> None:
    ledger = EventLedger()
    ledger.accept("a")
    polls = []

    async def store() -> dict[str, int]:
        polls.append(1)
        return {"a": 1} if len(polls) >= 3 else {}

    report = await ledger.settle(store, timeout=10)
    assert report.clean and report.delivered == 1
    assert len(polls) == 3
