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
    __slots__ = ("protocol_version", "job_id", "role", "mode", "rows", "ids_digest", "shared_params", "checkpoint_epochs", "activation_dim")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    IDS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SHARED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_DIM_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    role: str
    mode: str
    rows: int
    ids_digest: bytes
    shared_params: str
    checkpoint_epochs: _containers.RepeatedScalarFieldContainer[int]
    activation_dim: int
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., role: _Optional[str] = ..., mode: _Optional[str] = ..., rows: _Optional[int] = ..., ids_digest: _Optional[bytes] = ..., shared_params: _Optional[str] = ..., checkpoint_epochs: _Optional[_Iterable[int]] = ..., activation_dim: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("start_epoch", "share_metrics")
    START_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHARE_METRICS_FIELD_NUMBER: _ClassVar[int]
    start_epoch: int
    share_metrics: bool
    def __init__(self, start_epoch: _Optional[int] = ..., share_metrics: _Optional[bool] = ...) -> None: ...

class Activations(_message.Message):
    __slots__ = ("epoch", "batch", "split", "value", "ids_hash")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    IDS_HASH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    batch: int
    split: str
    value: Tensor
    ids_hash: bytes
    def __init__(self, epoch: _Optional[int] = ..., batch: _Optional[int] = ..., split: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., ids_hash: _Optional[bytes] = ...) -> None: ...

class Gradients(_message.Message):
    __slots__ = ("epoch", "batch", "value", "loss")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    batch: int
    value: Tensor
    loss: float
    def __init__(self, epoch: _Optional[int] = ..., batch: _Optional[int] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ..., loss: _Optional[float] = ...) -> None: ...

class EpochEnd(_message.Message):
    __slots__ = ("epoch", "stop", "metrics", "best_epoch")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    stop: bool
    metrics: _containers.ScalarMap[str, float]
    best_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., stop: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ..., best_epoch: _Optional[int] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("rows", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROWS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, rows: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FollowerMessage(_message.Message):
    __slots__ = ("hello", "activations", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    activations: Activations
    done: Done
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., activations: _Optional[_Union[Activations, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("hello", "welcome", "gradients", "epoch_end", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_END_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    welcome: Welcome
    gradients: Gradients
    epoch_end: EpochEnd
    done: Done
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., gradients: _Optional[_Union[Gradients, _Mapping]] = ..., epoch_end: _Optional[_Union[EpochEnd, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...
