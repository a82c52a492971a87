"""The embedded filesystem broker never shows a worker a half-written message."""

import json
import multiprocessing
import threading

from kombu import Connection

from fedsite import broker

TRANSPORT = broker.Transport


def options(tmp_path):
    for sub in ("done", "control"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "processed_folder": str(tmp_path / "done"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }


def produce(opts, items):
    with Connection(transport=TRANSPORT, transport_options=opts) as conn:
        q = conn.SimpleQueue("jobs")
        for item in items:
            q.put(item)
        q.close()


def test_a_message_file_is_complete_whenever_a_reader_can_see_it(tmp_path):
    opts = options(tmp_path)
    with Connection(transport=TRANSPORT, transport_options=opts) as conn:
        conn.SimpleQueue("jobs").close()  # declared once, as a worker does at start
    torn: list[str] = []
    done = threading.Event()

    def snoop():
        # What a polling worker does: list *.msg files and read them, as fast as it can.
        while not done.is_set():
            for path in tmp_path.glob("*.msg"):
                try:
                    json.loads(path.read_bytes())
                except FileNotFoundError:
                    continue
                except ValueError:
                    torn.append(path.name)

    snooper = threading.Thread(target=snoop)
    snooper.start()
    # Producers are other processes, as web and workers are.
    ctx = multiprocessing.get_context("fork")
    sent = [{"n": i, "pad": "x" * 50_000} for i in range(600)]
    producers = [ctx.Process(target=produce, args=(opts, sent[i::3])) for i in range(3)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(120)
    done.set()
    snooper.join()
    assert not torn, f"{len(torn)} messages were visible before they were written"

    received = []
    with Connection(transport=TRANSPORT, transport_options=opts) as conn:
        q = conn.SimpleQueue("jobs")
        while len(received) < len(sent):
            message = q.get(timeout=30)
            received.append(message.payload["n"])
            message.ack()
        q.close()
    assert sorted(received) == list(range(600))
    assert not list(tmp_path.glob("*.part"))
