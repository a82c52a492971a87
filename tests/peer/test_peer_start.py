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


def test_a_fresh_channel_for_a_returning_partner_leaves_calls_on_the_old_one_alone(var_dir):
    from types import SimpleNamespace

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from apps.peer import client, identity

    server, port, _trust, health = create_server("127.0.0.1:0", max_workers=2)
    server.start()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    partner = SimpleNamespace(endpoint=f"127.0.0.1:{port}", ca_pem=identity.ensure_identity().ca_pem)
    try:
        client.stub_for(partner)
        old_channel = next(c for k, c in client._channels.items() if k[0] == partner.endpoint)
        # when delivery drops the channel of a partner that was unreachable
        client.forget(partner)
        client.stub_for(partner)
        fresh = next(c for k, c in client._channels.items() if k[0] == partner.endpoint)
        # then the next call dials a new channel, and a call still using the old one is not cancelled
        assert fresh is not old_channel
        answer = health_pb2_grpc.HealthStub(old_channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close_all()
        server.stop(0).wait()


def test_doctor_checks_this_installations_own_peer_service(var_dir, settings):
    from io import StringIO

    from grpc_health.v1 import health_pb2

    from apps.peer.server import SERVICE_NAME

    server, port, _trust, health = create_server("127.0.0.1:0", max_workers=2)
    server.start()
    health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    settings.FEDSITE_PEER_ENDPOINT = settings.FEDSITE_PEER_LISTEN = f"127.0.0.1:{port}"
    try:
        out = StringIO()
        call_command("doctor", stdout=out)
        assert f"peer service  serving at 127.0.0.1:{port}" in out.getvalue()
    finally:
        server.stop(0).wait()
    # its peer service is gone: the doctor fails and says so
    out = StringIO()
    with pytest.raises(CommandError, match="1 problem"):
        call_command("doctor", stdout=out)
    assert f"not answering at 127.0.0.1:{port}" in out.getvalue() and "run_peer" in out.getvalue()
