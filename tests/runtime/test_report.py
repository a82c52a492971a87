"""The runtime's reports are durable: retried through an outage of the web, in order, and the
result also lands in the output folder."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runtime.config import ReportConfig
from runtime.report import Reporter

pytestmark = pytest.mark.runtime


class Web:
    """A report endpoint on a fixed loopback port that can be down (nothing listening) and come back."""

    def __init__(self, status: int = 200) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.status = status
        self.events: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/runtime/jobs/j/report"

    def up(self) -> None:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if web.status == 200:
                    web.events.extend(body["events"])
                self.send_response(web.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def web():
    w = Web()
    yield w
    w.down()


def test_reports_survive_an_outage_of_the_web_in_order(web, tmp_path):
    # given the web is down (longer than the old three quick retries) while the runtime reports
    reporter = Reporter(ReportConfig(url=web.url, token="t"), flush_interval_s=0.05, output_dir=tmp_path)
    for i in range(5):
        reporter.log(f"line {i}")
    reporter.result("psi", {"intersection_size": 41})
    time.sleep(2.0)
    # when it comes back
    web.up()
    reporter.log("after")
    reporter.close(10)
    # then everything arrived, once, in order
    lines = [e.get("line") for e in web.events if e["type"] == "log"]
    assert lines == [f"line {i}" for i in range(5)] + ["after"]
    assert [e["data"] for e in web.events if e["type"] == "result"] == [{"intersection_size": 41}]
    assert json.loads((tmp_path / "result.json").read_text()) == {"psi": {"intersection_size": 41}}


def test_the_result_is_in_the_output_folder_when_the_web_never_answers(web, tmp_path):
    reporter = Reporter(ReportConfig(url=web.url, token="t"), flush_interval_s=0.05, output_dir=tmp_path)
    reporter.result("psi", {"intersection_size": 3})
    reporter.result("train", {"model_dir": "m"})
    t0 = time.monotonic()
    reporter.close(0.5)  # the runtime exits after its final grace
    assert time.monotonic() - t0 < 5
    assert json.loads((tmp_path / "result.json").read_text()) == {
        "psi": {"intersection_size": 3},
        "train": {"model_dir": "m"},
    }


def test_a_refused_report_is_not_retried_forever(tmp_path):
    web = Web(status=403)
    web.up()
    try:
        reporter = Reporter(ReportConfig(url=web.url, token="revoked"), flush_interval_s=0.05)
        reporter.log("x")
        t0 = time.monotonic()
        reporter.close(30)
        assert time.monotonic() - t0 < 5  # dropped at once, not retried until the deadline
    finally:
        web.down()


def test_a_stale_result_file_of_an_earlier_run_is_removed(tmp_path):
    (tmp_path / "result.json").write_text('{"train": {"model_dir": "old"}}')
    Reporter(None, output_dir=tmp_path).close()
    assert not (tmp_path / "result.json").exists()
