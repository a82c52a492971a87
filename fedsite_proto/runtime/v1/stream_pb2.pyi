from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamHello(_message.Message):
    __slots__ = ("protocol_version", "job_id", "role", "shared_params", "x25519_public", "nonce", "key_check", "committed_seq", "prepared_seq", "prepared_digest")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SHARED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    KEY_CHECK_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    PREPARED_SEQ_FIELD_NUMBER: _ClassVar[int]
    PREPARED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    role: str
    shared_params: str
    x25519_public: bytes
    nonce: bytes
    key_check: bytes
    committed_seq: int
    prepared_seq: int
    prepared_digest: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., role: _Optional[str] = ..., shared_params: _Optional[str] = ..., x25519_public: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., key_check: _Optional[bytes] = ..., committed_seq: _Optional[int] = ..., prepared_seq: _Optional[int] = ..., prepared_digest: _Optional[bytes] = ...) -> None: ...

class StreamWelcome(_message.Message):
    __slots__ = ("committed_seq", "committed_digest", "new_key")
    COMMITTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_FIELD_NUMBER: _ClassVar[int]
    committed_seq: int
    committed_digest: bytes
    new_key: bool
    def __init__(self, committed_seq: _Optional[int] = ..., committed_digest: _Optional[bytes] = ..., new_key: _Optional[bool] = ...) -> None: ...

class JoinQuery(_message.Message):
    __slots__ = ("seq", "first_lsn", "keys", "times", "watermark", "idle")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_LSN_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    first_lsn: int
    keys: bytes
    times: bytes
    watermark: float
    idle: bool
    def __init__(self, seq: _Optional[int] = ..., first_lsn: _Optional[int] = ..., keys: _Optional[bytes] = ..., times: _Optional[bytes] = ..., watermark: _Optional[float] = ..., idle: _Optional[bool] = ...) -> None: ...

class JoinAnswer(_message.Message):
    __slots__ = ("seq", "matched_lsns", "id_digest", "watermark", "events_read", "late_events", "idle")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MATCHED_LSNS_FIELD_NUMBER: _ClassVar[int]
    ID_DIGEST_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    EVENTS_READ_FIELD_NUMBER: _ClassVar[int]
    LATE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    matched_lsns: bytes
    id_digest: bytes
    watermark: float
    events_read: int
    late_events: int
    idle: bool
    def __init__(self, seq: _Optional[int] = ..., matched_lsns: _Optional[bytes] = ..., id_digest: _Optional[bytes] = ..., watermark: _Optional[float] = ..., events_read: _Optional[int] = ..., late_events: _Optional[int] = ..., idle: _Optional[bool] = ...) -> None: ...

class BlockCommit(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class StreamDone(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class StreamFailure(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StreamFollowerMessage(_message.Message):
    __slots__ = ("hello", "answer", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: StreamHello
    answer: JoinAnswer
    done: StreamDone
    failure: StreamFailure
    def __init__(self, hello: _Optional[_Union[StreamHello, _Mapping]] = ..., answer: _Optional[_Union[JoinAnswer, _Mapping]] = ..., done: _Optional[_Union[StreamDone, _Mapping]] = ..., failure: _Optional[_Union[StreamFailure, _Mapping]] = ...) -> None: ...

class StreamLeaderMessage(_message.Message):
    __slots__ = ("hello", "welcome", "query", "commit", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: StreamHello
    welcome: StreamWelcome
    query: JoinQuery
    commit: BlockCommit
    done: StreamDone
    failure: StreamFailure
    def __init__(self, hello: _Optional[_Union[StreamHello, _Mapping]] = ..., welcome: _Optional[_Union[StreamWelcome, _Mapping]] = ..., query: _Optional[_Union[JoinQuery, _Mapping]] = ..., commit: _Optional[_Union[BlockCommit, _Mapping]] = ..., done: _Optional[_Union[StreamDone, _Mapping]] = ..., failure: _Optional[_Union[StreamFailure, _Mapping]] = ...) -> None: ...
