from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandshakeRequest(_message.Message):
    __slots__ = ("invitation_id", "secret", "installation", "endpoint", "ca_pem", "workspace_id", "workspace_slug", "workspace_name", "workspace_public_key", "signature", "timestamp_ms")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    INSTALLATION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_SLUG_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    secret: str
    installation: str
    endpoint: str
    ca_pem: str
    workspace_id: str
    workspace_slug: str
    workspace_name: str
    workspace_public_key: str
    signature: bytes
    timestamp_ms: int
    def __init__(self, invitation_id: _Optional[str] = ..., secret: _Optional[str] = ..., installation: _Optional[str] = ..., endpoint: _Optional[str] = ..., ca_pem: _Optional[str] = ..., workspace_id: _Optional[str] = ..., workspace_slug: _Optional[str] = ..., workspace_name: _Optional[str] = ..., workspace_public_key: _Optional[str] = ..., signature: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("installation", "workspace_id", "workspace_slug", "workspace_name", "workspace_public_key", "partner_id")
    INSTALLATION_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_SLUG_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ID_FIELD_NUMBER: _ClassVar[int]
    installation: str
    workspace_id: str
    workspace_slug: str
    workspace_name: str
    workspace_public_key: str
    partner_id: str
    def __init__(self, installation: _Optional[str] = ..., workspace_id: _Optional[str] = ..., workspace_slug: _Optional[str] = ..., workspace_name: _Optional[str] = ..., workspace_public_key: _Optional[str] = ..., partner_id: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("message_id", "timestamp_ms", "sender_workspace_id", "receiver_workspace_id", "kind", "payload", "seq", "ticket_id", "signature")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SENDER_WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    timestamp_ms: int
    sender_workspace_id: str
    receiver_workspace_id: str
    kind: str
    payload: bytes
    seq: int
    ticket_id: str
    signature: bytes
    def __init__(self, message_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., sender_workspace_id: _Optional[str] = ..., receiver_workspace_id: _Optional[str] = ..., kind: _Optional[str] = ..., payload: _Optional[bytes] = ..., seq: _Optional[int] = ..., ticket_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("result", "server_time_ms", "cert_not_after", "state")
    class Result(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        RESULT_UNSPECIFIED: _ClassVar[Ack.Result]
        APPLIED: _ClassVar[Ack.Result]
        DUPLICATE: _ClassVar[Ack.Result]
        HEARTBEAT: _ClassVar[Ack.Result]
    RESULT_UNSPECIFIED: Ack.Result
    APPLIED: Ack.Result
    DUPLICATE: Ack.Result
    HEARTBEAT: Ack.Result
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CERT_NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    result: Ack.Result
    server_time_ms: int
    cert_not_after: str
    state: TicketState
    def __init__(self, result: _Optional[_Union[Ack.Result, str]] = ..., server_time_ms: _Optional[int] = ..., cert_not_after: _Optional[str] = ..., state: _Optional[_Union[TicketState, _Mapping]] = ...) -> None: ...

class TicketState(_message.Message):
    __slots__ = ("ticket_id", "status", "is_proposer", "jobs", "known", "decision_comment")
    TICKET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IS_PROPOSER_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    DECISION_COMMENT_FIELD_NUMBER: _ClassVar[int]
    ticket_id: str
    status: str
    is_proposer: bool
    jobs: _containers.RepeatedCompositeFieldContainer[JobState]
    known: bool
    decision_comment: str
    def __init__(self, ticket_id: _Optional[str] = ..., status: _Optional[str] = ..., is_proposer: _Optional[bool] = ..., jobs: _Optional[_Iterable[_Union[JobState, _Mapping]]] = ..., known: _Optional[bool] = ..., decision_comment: _Optional[str] = ...) -> None: ...

class JobState(_message.Message):
    __slots__ = ("job_id", "attempt", "status", "error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    status: str
    error: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., status: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
