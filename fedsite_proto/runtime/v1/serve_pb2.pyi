from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("rows", "cols", "data")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    data: bytes
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "job_id", "role", "model_job_id", "family", "width")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    role: str
    model_job_id: str
    family: str
    width: int
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., role: _Optional[str] = ..., model_job_id: _Optional[str] = ..., family: _Optional[str] = ..., width: _Optional[int] = ...) -> None: ...

class PartialRequest(_message.Message):
    __slots__ = ("request_id", "ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PartialReply(_message.Message):
    __slots__ = ("request_id", "known", "activations", "decisions", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    known: _containers.RepeatedScalarFieldContainer[bool]
    activations: Tensor
    decisions: bytes
    error: str
    def __init__(self, request_id: _Optional[int] = ..., known: _Optional[_Iterable[bool]] = ..., activations: _Optional[_Union[Tensor, _Mapping]] = ..., decisions: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FollowerMessage(_message.Message):
    __slots__ = ("hello", "reply", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    reply: PartialReply
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., reply: _Optional[_Union[PartialReply, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("hello", "request", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    request: PartialRequest
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., request: _Optional[_Union[PartialRequest, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("ids", "features", "deadline_ms")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Features
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Features, _Mapping]] = ...) -> None: ...
    IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.MessageMap[str, Features]
    deadline_ms: float
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., features: _Optional[_Mapping[str, Features]] = ..., deadline_ms: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("id", "ok", "score", "reason", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    ok: bool
    score: float
    reason: str
    error: str
    def __init__(self, id: _Optional[str] = ..., ok: _Optional[bool] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class PredictReply(_message.Message):
    __slots__ = ("predictions", "elapsed_ms")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    elapsed_ms: float
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("role", "partner_connected", "requests", "predictions", "p50_ms", "p99_ms", "predictions_per_hour")
    class PredictionsPerHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PARTNER_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    role: str
    partner_connected: bool
    requests: int
    predictions: int
    p50_ms: float
    p99_ms: float
    predictions_per_hour: _containers.ScalarMap[str, int]
    def __init__(self, role: _Optional[str] = ..., partner_connected: _Optional[bool] = ..., requests: _Optional[int] = ..., predictions: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., predictions_per_hour: _Optional[_Mapping[str, int]] = ...) -> None: ...
