from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("protocol_version", "job_id", "role", "mode", "rows", "ids_digest", "shared_params", "checkpoint_trees", "candidates")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    IDS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SHARED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_TREES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    job_id: str
    role: str
    mode: str
    rows: int
    ids_digest: bytes
    shared_params: str
    checkpoint_trees: _containers.RepeatedScalarFieldContainer[int]
    candidates: int
    def __init__(self, protocol_version: _Optional[int] = ..., job_id: _Optional[str] = ..., role: _Optional[str] = ..., mode: _Optional[str] = ..., rows: _Optional[int] = ..., ids_digest: _Optional[bytes] = ..., shared_params: _Optional[str] = ..., checkpoint_trees: _Optional[_Iterable[int]] = ..., candidates: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("start_tree", "public_key", "scheme", "share_metrics")
    START_TREE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    SHARE_METRICS_FIELD_NUMBER: _ClassVar[int]
    start_tree: int
    public_key: bytes
    scheme: str
    share_metrics: bool
    def __init__(self, start_tree: _Optional[int] = ..., public_key: _Optional[bytes] = ..., scheme: _Optional[str] = ..., share_metrics: _Optional[bool] = ...) -> None: ...

class TreeStart(_message.Message):
    __slots__ = ("tree", "count", "ciphertexts", "sample", "shifted")
    TREE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SHIFTED_FIELD_NUMBER: _ClassVar[int]
    tree: int
    count: int
    ciphertexts: bytes
    sample: bytes
    shifted: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, tree: _Optional[int] = ..., count: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ..., sample: _Optional[bytes] = ..., shifted: _Optional[_Iterable[bytes]] = ...) -> None: ...

class NodeDecision(_message.Message):
    __slots__ = ("node", "kind", "left", "candidate", "gain")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LEAF: _ClassVar[NodeDecision.Kind]
        LEADER_SPLIT: _ClassVar[NodeDecision.Kind]
        FOLLOWER_SPLIT: _ClassVar[NodeDecision.Kind]
    LEAF: NodeDecision.Kind
    LEADER_SPLIT: NodeDecision.Kind
    FOLLOWER_SPLIT: NodeDecision.Kind
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    GAIN_FIELD_NUMBER: _ClassVar[int]
    node: int
    kind: NodeDecision.Kind
    left: bytes
    candidate: int
    gain: float
    def __init__(self, node: _Optional[int] = ..., kind: _Optional[_Union[NodeDecision.Kind, str]] = ..., left: _Optional[bytes] = ..., candidate: _Optional[int] = ..., gain: _Optional[float] = ...) -> None: ...

class LevelDecision(_message.Message):
    __slots__ = ("tree", "depth", "nodes")
    TREE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    tree: int
    depth: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeDecision]
    def __init__(self, tree: _Optional[int] = ..., depth: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeDecision, _Mapping]]] = ...) -> None: ...

class NodeHistogram(_message.Message):
    __slots__ = ("node", "count", "ciphertexts", "slots")
    NODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    node: int
    count: int
    ciphertexts: bytes
    slots: int
    def __init__(self, node: _Optional[int] = ..., count: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ..., slots: _Optional[int] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("node", "left")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    node: int
    left: bytes
    def __init__(self, node: _Optional[int] = ..., left: _Optional[bytes] = ...) -> None: ...

class LevelAnswer(_message.Message):
    __slots__ = ("tree", "depth", "partitions", "histograms", "key_fingerprint")
    TREE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    tree: int
    depth: int
    partitions: _containers.RepeatedCompositeFieldContainer[Partition]
    histograms: _containers.RepeatedCompositeFieldContainer[NodeHistogram]
    key_fingerprint: bytes
    def __init__(self, tree: _Optional[int] = ..., depth: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[Partition, _Mapping]]] = ..., histograms: _Optional[_Iterable[_Union[NodeHistogram, _Mapping]]] = ..., key_fingerprint: _Optional[bytes] = ...) -> None: ...

class Reach(_message.Message):
    __slots__ = ("tree", "leaves", "rows", "bits")
    TREE_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    tree: int
    leaves: int
    rows: int
    bits: bytes
    def __init__(self, tree: _Optional[int] = ..., leaves: _Optional[int] = ..., rows: _Optional[int] = ..., bits: _Optional[bytes] = ...) -> None: ...

class TreeEnd(_message.Message):
    __slots__ = ("tree", "stop", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TREE_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    tree: int
    stop: bool
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, tree: _Optional[int] = ..., stop: _Optional[bool] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("rows", "trees", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TREES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    trees: int
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, rows: _Optional[int] = ..., trees: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("kind", "message")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FollowerMessage(_message.Message):
    __slots__ = ("hello", "level_answer", "reach", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    LEVEL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    level_answer: LevelAnswer
    reach: Reach
    done: Done
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., level_answer: _Optional[_Union[LevelAnswer, _Mapping]] = ..., reach: _Optional[_Union[Reach, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("hello", "welcome", "tree_start", "level_decision", "tree_end", "done", "failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    TREE_START_FIELD_NUMBER: _ClassVar[int]
    LEVEL_DECISION_FIELD_NUMBER: _ClassVar[int]
    TREE_END_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    welcome: Welcome
    tree_start: TreeStart
    level_decision: LevelDecision
    tree_end: TreeEnd
    done: Done
    failure: Failure
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., tree_start: _Optional[_Union[TreeStart, _Mapping]] = ..., level_decision: _Optional[_Union[LevelDecision, _Mapping]] = ..., tree_end: _Optional[_Union[TreeEnd, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...
