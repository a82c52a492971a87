from fedsite_proto.runtime.v1 import train_pb2 as _train_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamHello(_message.Message):
    __slots__ = ("protocol_version", "job_id", "role", "shared_params", "checkpoint_rounds", "activation_dim")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SHARED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_DIM_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    role: str
    shared_params: str
    checkpoint_rounds: _containers.RepeatedScalarFieldContainer[int]
    activation_dim: int
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., role: _Optional[str] = ..., shared_params: _Optional[str] = ..., checkpoint_rounds: _Optional[_Iterable[int]] = ..., activation_dim: _Optional[int] = ...) -> None: ...

class StreamWelcome(_message.Message):
    __slots__ = ("start_round", "share_metrics")
    START_ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARE_METRICS_FIELD_NUMBER: _ClassVar[int]
    start_round: int
    share_metrics: bool
    def __init__(self, start_round: _Optional[int] = ..., share_metrics: _Optional[bool] = ...) -> None: ...

class Round(_message.Message):
    __slots__ = ("round", "first_seq", "last_seq", "blocks_digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    first_seq: int
    last_seq: int
    blocks_digest: bytes
    def __init__(self, round: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., blocks_digest: _Optional[bytes] = ...) -> None: ...

class RoundReady(_message.Message):
    __slots__ = ("round", "blocks_digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    blocks_digest: bytes
    def __init__(self, round: _Optional[int] = ..., blocks_digest: _Optional[bytes] = ...) -> None: ...

class RoundEnd(_message.Message):
    __slots__ = ("round", "version", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    round: int
    version: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, round: _Optional[int] = ..., version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Idle(_message.Message):
    __slots__ = ("last_seq",)
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    def __init__(self, last_seq: _Optional[int] = ...) -> None: ...

class StreamTrainFollowerMessage(_message.Message):
    __slots__ = ("hello", "ready", "activations", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: StreamHello
    ready: RoundReady
    activations: _train_pb2.Activations
    failure: _train_pb2.Failure
    def __init__(self, hello: _Optional[_Union[StreamHello, _Mapping]] = ..., ready: _Optional[_Union[RoundReady, _Mapping]] = ..., activations: _Optional[_Union[_train_pb2.Activations, _Mapping]] = ..., failure: _Optional[_Union[_train_pb2.Failure, _Mapping]] = ...) -> None: ...

class StreamTrainLeaderMessage(_message.Message):
    __slots__ = ("hello", "welcome", "round", "gradients", "round_end", "idle", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    ROUND_END_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: StreamHello
    welcome: StreamWelcome
    round: Round
    gradients: _train_pb2.Gradients
    round_end: RoundEnd
    idle: Idle
    failure: _train_pb2.Failure
    def __init__(self, hello: _Optional[_Union[StreamHello, _Mapping]] = ..., welcome: _Optional[_Union[StreamWelcome, _Mapping]] = ..., round: _Optional[_Union[Round, _Mapping]] = ..., gradients: _Optional[_Union[_train_pb2.Gradients, _Mapping]] = ..., round_end: _Optional[_Union[RoundEnd, _Mapping]] = ..., idle: _Optional[_Union[Idle, _Mapping]] = ..., failure: _Optional[_Union[_train_pb2.Failure, _Mapping]] = ...) -> None: ...
