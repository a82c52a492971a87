"""The embedded filesystem broker never hands a worker a half-written message."""

import threading

from kombu import Connection

from fedsite import broker

TRANSPORT = broker.Transport


def test_concurrent_producers_and_a_consumer_lose_nothing(tmp_path):

    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path / "done"),
        "store_processed": False,
    }
    (tmp_path / "done").mkdir()
    sent = [{"n": i, "pad": "x" * 20_000} for i in range(300)]
    received: list[int] = []
    errors: list[BaseException] = []

    def produce(items):
        with Connection(transport=TRANSPORT, transport_options=options) as conn:
            q = conn.SimpleQueue("jobs")
            for item in items:
                q.put(item)
            q.close()

    def consume():
        try:
            with Connection(transport=TRANSPORT, transport_options=options) as conn:
                q = conn.SimpleQueue("jobs")
                while len(received) < len(sent):
                    message = q.get(timeout=10)
                    received.append(message.payload["n"])
                    message.ack()
                q.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(sent[i::3],)) for i in range(3)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    consumer.join(60)
    assert not errors, errors
    assert sorted(received) == list(range(300))
    assert not list(tmp_path.glob("*.part"))
