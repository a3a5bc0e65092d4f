from milepost.v1 import routing_pb2 as _routing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gpu(_message.Message):
    __slots__ = ("index", "name", "memory_bytes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_bytes: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cpu_cores", "memory_bytes", "gpus")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: int
    memory_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    def __init__(self, cpu_cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ...) -> None: ...

class EngineInfo(_message.Message):
    __slots__ = ("name", "version", "available", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    available: bool
    reason: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., available: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "address", "resources", "engines", "labels", "milepost_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MILEPOST_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    address: str
    resources: Resources
    engines: _containers.RepeatedCompositeFieldContainer[EngineInfo]
    labels: _containers.ScalarMap[str, str]
    milepost_version: str
    def __init__(self, agent_id: _Optional[str] = ..., address: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., engines: _Optional[_Iterable[_Union[EngineInfo, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., milepost_version: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "flavor", "size_bytes", "created_at", "manifest_json", "number", "digest", "aliases", "stage", "pushed_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PUSHED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    flavor: str
    size_bytes: int
    created_at: float
    manifest_json: str
    number: int
    digest: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    stage: str
    pushed_by: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., flavor: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ..., manifest_json: _Optional[str] = ..., number: _Optional[int] = ..., digest: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., stage: _Optional[str] = ..., pushed_by: _Optional[str] = ...) -> None: ...

class Batching(_message.Message):
    __slots__ = ("max_batch_size", "max_delay_us", "max_queue_rows")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_ROWS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_delay_us: int
    max_queue_rows: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_delay_us: _Optional[int] = ..., max_queue_rows: _Optional[int] = ...) -> None: ...

class ResourceRequest(_message.Message):
    __slots__ = ("cpu", "memory_bytes", "gpus", "gpu_memory_bytes", "device")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    cpu: float
    memory_bytes: int
    gpus: int
    gpu_memory_bytes: int
    device: str
    def __init__(self, cpu: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_memory_bytes: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("deployment_id", "endpoint", "model", "version", "replicas", "agent_ids", "state", "message", "batching", "resources", "selector", "engine", "number")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    endpoint: str
    model: str
    version: str
    replicas: int
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    state: str
    message: str
    batching: Batching
    resources: ResourceRequest
    selector: _containers.ScalarMap[str, str]
    engine: str
    number: int
    def __init__(self, deployment_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., replicas: _Optional[int] = ..., agent_ids: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., message: _Optional[str] = ..., batching: _Optional[_Union[Batching, _Mapping]] = ..., resources: _Optional[_Union[ResourceRequest, _Mapping]] = ..., selector: _Optional[_Mapping[str, str]] = ..., engine: _Optional[str] = ..., number: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "policy", "deployments", "created_at", "routing", "require_approval")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    created_at: float
    routing: _routing_pb2.RoutingPolicy
    require_approval: bool
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., created_at: _Optional[float] = ..., routing: _Optional[_Union[_routing_pb2.RoutingPolicy, _Mapping]] = ..., require_approval: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "endpoint", "at", "kind", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    endpoint: str
    at: float
    kind: str
    message: str
    def __init__(self, id: _Optional[int] = ..., endpoint: _Optional[str] = ..., at: _Optional[float] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AgentLoad(_message.Message):
    __slots__ = ("inflight_requests", "requests_per_s", "cpu_utilization", "gpus")
    INFLIGHT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    inflight_requests: int
    requests_per_s: float
    cpu_utilization: float
    gpus: _containers.RepeatedCompositeFieldContainer[GpuRoom]
    def __init__(self, inflight_requests: _Optional[int] = ..., requests_per_s: _Optional[float] = ..., cpu_utilization: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[GpuRoom, _Mapping]]] = ...) -> None: ...

class GpuRoom(_message.Message):
    __slots__ = ("index", "total_bytes", "reserved_bytes", "replicas", "deployment_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    total_bytes: int
    reserved_bytes: int
    replicas: int
    deployment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index: _Optional[int] = ..., total_bytes: _Optional[int] = ..., reserved_bytes: _Optional[int] = ..., replicas: _Optional[int] = ..., deployment_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("info", "state", "last_heartbeat", "deployment_ids", "load", "serving_deployment_ids")
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    SERVING_DEPLOYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    info: AgentInfo
    state: str
    last_heartbeat: float
    deployment_ids: _containers.RepeatedScalarFieldContainer[str]
    load: AgentLoad
    serving_deployment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, info: _Optional[_Union[AgentInfo, _Mapping]] = ..., state: _Optional[str] = ..., last_heartbeat: _Optional[float] = ..., deployment_ids: _Optional[_Iterable[str]] = ..., load: _Optional[_Union[AgentLoad, _Mapping]] = ..., serving_deployment_ids: _Optional[_Iterable[str]] = ...) -> None: ...
