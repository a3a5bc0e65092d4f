from milepost.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StageSpec(_message.Message):
    __slots__ = ("name", "kind", "engine", "depends_on", "resources", "selector", "params_json")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    engine: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    resources: _types_pb2.ResourceRequest
    selector: _containers.ScalarMap[str, str]
    params_json: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., engine: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., resources: _Optional[_Union[_types_pb2.ResourceRequest, _Mapping]] = ..., selector: _Optional[_Mapping[str, str]] = ..., params_json: _Optional[str] = ...) -> None: ...

class PipelineSpec(_message.Message):
    __slots__ = ("name", "stages")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    stages: _containers.RepeatedCompositeFieldContainer[StageSpec]
    def __init__(self, name: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageSpec, _Mapping]]] = ...) -> None: ...

class StageRun(_message.Message):
    __slots__ = ("name", "state", "agent_id", "message", "started_at", "finished_at", "rows", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    agent_id: str
    message: str
    started_at: float
    finished_at: float
    rows: int
    outputs: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., agent_id: _Optional[str] = ..., message: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., rows: _Optional[int] = ..., outputs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PipelineRun(_message.Message):
    __slots__ = ("run_id", "pipeline", "state", "created_at", "finished_at", "stages", "spec")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    pipeline: str
    state: str
    created_at: float
    finished_at: float
    stages: _containers.RepeatedCompositeFieldContainer[StageRun]
    spec: PipelineSpec
    def __init__(self, run_id: _Optional[str] = ..., pipeline: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., stages: _Optional[_Iterable[_Union[StageRun, _Mapping]]] = ..., spec: _Optional[_Union[PipelineSpec, _Mapping]] = ...) -> None: ...

class StageProgress(_message.Message):
    __slots__ = ("rows", "message", "done", "outputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    message: str
    done: bool
    outputs: _containers.ScalarMap[str, str]
    def __init__(self, rows: _Optional[int] = ..., message: _Optional[str] = ..., done: _Optional[bool] = ..., outputs: _Optional[_Mapping[str, str]] = ...) -> None: ...
