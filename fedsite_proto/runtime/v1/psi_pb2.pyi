from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PsiHello(_message.Message):
    __slots__ = ("job_id", "protocol", "protocol_version", "engine", "suite", "input_size", "batch_size", "session_id", "error", "capabilities", "link_address", "probe")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    SUITE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LINK_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    protocol: str
    protocol_version: int
    engine: str
    suite: str
    input_size: int
    batch_size: int
    session_id: str
    error: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    link_address: str
    probe: bool
    def __init__(self, job_id: _Optional[str] = ..., protocol: _Optional[str] = ..., protocol_version: _Optional[int] = ..., engine: _Optional[str] = ..., suite: _Optional[str] = ..., input_size: _Optional[int] = ..., batch_size: _Optional[int] = ..., session_id: _Optional[str] = ..., error: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., link_address: _Optional[str] = ..., probe: _Optional[bool] = ...) -> None: ...

class PsiHelloReply(_message.Message):
    __slots__ = ("ok", "error", "session_id", "input_size", "batch_size", "rsa_n", "rsa_e", "have_follower_final", "have_leader_final", "protocol", "engine", "link_address")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RSA_N_FIELD_NUMBER: _ClassVar[int]
    RSA_E_FIELD_NUMBER: _ClassVar[int]
    HAVE_FOLLOWER_FINAL_FIELD_NUMBER: _ClassVar[int]
    HAVE_LEADER_FINAL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    LINK_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    session_id: str
    input_size: int
    batch_size: int
    rsa_n: bytes
    rsa_e: int
    have_follower_final: _containers.RepeatedScalarFieldContainer[int]
    have_leader_final: _containers.RepeatedScalarFieldContainer[int]
    protocol: str
    engine: str
    link_address: str
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., session_id: _Optional[str] = ..., input_size: _Optional[int] = ..., batch_size: _Optional[int] = ..., rsa_n: _Optional[bytes] = ..., rsa_e: _Optional[int] = ..., have_follower_final: _Optional[_Iterable[int]] = ..., have_leader_final: _Optional[_Iterable[int]] = ..., protocol: _Optional[str] = ..., engine: _Optional[str] = ..., link_address: _Optional[str] = ...) -> None: ...

class PsiBatch(_message.Message):
    __slots__ = ("session_id", "index", "values", "count", "kind")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    index: int
    values: bytes
    count: int
    kind: int
    def __init__(self, session_id: _Optional[str] = ..., index: _Optional[int] = ..., values: _Optional[bytes] = ..., count: _Optional[int] = ..., kind: _Optional[int] = ...) -> None: ...

class PsiBatchRef(_message.Message):
    __slots__ = ("session_id", "index")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    index: int
    def __init__(self, session_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class PsiAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PsiFinish(_message.Message):
    __slots__ = ("session_id", "intersection_size", "digest")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERSECTION_SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    intersection_size: int
    digest: bytes
    def __init__(self, session_id: _Optional[str] = ..., intersection_size: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class PsiFinishReply(_message.Message):
    __slots__ = ("ok", "error", "intersection_size")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INTERSECTION_SIZE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    intersection_size: int
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., intersection_size: _Optional[int] = ...) -> None: ...

class PsiAbort(_message.Message):
    __slots__ = ("session_id", "error")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    error: str
    def __init__(self, session_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
