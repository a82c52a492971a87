"""Starting the peer service: it refuses a port another process listens on."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from django.core.management import CommandError, call_command

from apps.peer.server import PortInUse, create_server

pytestmark = [pytest.mark.peer, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.mark.timeout(60)  # a regression would serve (block) instead of failing
def test_run_peer_refuses_a_port_another_peer_service_listens_on(var_dir):
    # given a peer service listening
    first, port, _trust, _health = create_server("127.0.0.1:0", max_workers=2)
    first.start()
    try:
        # when a second one is started on its port, it fails with the reason instead of sharing it
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use"):
            call_command("run_peer", listen=f"127.0.0.1:{port}")
    finally:
        first.stop(0).wait()


def test_it_refuses_a_port_a_port_sharing_grpc_server_holds(var_dir):
    """gRPC servers set SO_REUSEPORT by default: such a server must not make us share its port."""
    other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        with pytest.raises(PortInUse):
            create_server(f"127.0.0.1:{port}", max_workers=2)
    finally:
        other.stop(0).wait()
