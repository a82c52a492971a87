from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartitionHello(_message.Message):
    __slots__ = ("protocol_version", "job_id", "partition", "partitions")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    partition: int
    partitions: int
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., partition: _Optional[int] = ..., partitions: _Optional[int] = ...) -> None: ...

class PartitionKeyReply(_message.Message):
    __slots__ = ("ok", "error", "key")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    key: bytes
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class PartitionReuseRequest(_message.Message):
    __slots__ = ("hello", "offer", "error")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    hello: PartitionHello
    offer: str
    error: str
    def __init__(self, hello: _Optional[_Union[PartitionHello, _Mapping]] = ..., offer: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class PartitionReuseReply(_message.Message):
    __slots__ = ("ok", "error", "reuse")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    reuse: bool
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., reuse: _Optional[bool] = ...) -> None: ...

class PartitionPingReply(_message.Message):
    __slots__ = ("ok",)
    OK_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    def __init__(self, ok: _Optional[bool] = ...) -> None: ...
