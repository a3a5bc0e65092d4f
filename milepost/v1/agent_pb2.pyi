from milepost.v1 import pipelines_pb2 as _pipelines_pb2
from milepost.v1 import routing_pb2 as _routing_pb2
from milepost.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListDecisionsRequest(_message.Message):
    __slots__ = ("endpoint", "since", "until", "limit", "decision_id")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    since: float
    until: float
    limit: int
    decision_id: str
    def __init__(self, endpoint: _Optional[str] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., limit: _Optional[int] = ..., decision_id: _Optional[str] = ...) -> None: ...

class DecisionRows(_message.Message):
    __slots__ = ("arrow_ipc",)
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    def __init__(self, arrow_ipc: _Optional[bytes] = ...) -> None: ...

class ServedArmRequest(_message.Message):
    __slots__ = ("endpoint", "key")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    key: str
    def __init__(self, endpoint: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ServedArmResponse(_message.Message):
    __slots__ = ("arm", "served_at")
    ARM_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_FIELD_NUMBER: _ClassVar[int]
    arm: str
    served_at: float
    def __init__(self, arm: _Optional[str] = ..., served_at: _Optional[float] = ...) -> None: ...

class RunStageRequest(_message.Message):
    __slots__ = ("run_id", "stage", "params_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage: _pipelines_pb2.StageSpec
    params_json: str
    def __init__(self, run_id: _Optional[str] = ..., stage: _Optional[_Union[_pipelines_pb2.StageSpec, _Mapping]] = ..., params_json: _Optional[str] = ...) -> None: ...

class SetRoutesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("deployment_id", "endpoint", "model", "version", "flavor", "batching", "engine", "gpus", "version_number", "gpu_memory_bytes")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    endpoint: str
    model: str
    version: str
    flavor: str
    batching: _types_pb2.Batching
    engine: str
    gpus: int
    version_number: int
    gpu_memory_bytes: int
    def __init__(self, deployment_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., flavor: _Optional[str] = ..., batching: _Optional[_Union[_types_pb2.Batching, _Mapping]] = ..., engine: _Optional[str] = ..., gpus: _Optional[int] = ..., version_number: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnloadRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class UnloadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadedDeployment(_message.Message):
    __slots__ = ("deployment_id", "endpoint", "model", "version", "engine")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    endpoint: str
    model: str
    version: str
    engine: str
    def __init__(self, deployment_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class AgentStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatusResponse(_message.Message):
    __slots__ = ("info", "deployments", "routes_generation", "metrics")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    info: _types_pb2.AgentInfo
    deployments: _containers.RepeatedCompositeFieldContainer[LoadedDeployment]
    routes_generation: int
    metrics: _containers.RepeatedCompositeFieldContainer[_routing_pb2.ArmMetrics]
    def __init__(self, info: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ..., deployments: _Optional[_Iterable[_Union[LoadedDeployment, _Mapping]]] = ..., routes_generation: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[_routing_pb2.ArmMetrics, _Mapping]]] = ...) -> None: ...
