from milepost.v1 import pipelines_pb2 as _pipelines_pb2
from milepost.v1 import routing_pb2 as _routing_pb2
from milepost.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: _types_pb2.AgentInfo
    def __init__(self, agent: _Optional[_Union[_types_pb2.AgentInfo, _Mapping]] = ...) -> None: ...

class RegisterAgentResponse(_message.Message):
    __slots__ = ("agent_id", "heartbeat_interval_s", "ttl_s", "control_token", "access_tokens")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    CONTROL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    heartbeat_interval_s: float
    ttl_s: float
    control_token: str
    access_tokens: _containers.RepeatedCompositeFieldContainer[TokenDigest]
    def __init__(self, agent_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., ttl_s: _Optional[float] = ..., control_token: _Optional[str] = ..., access_tokens: _Optional[_Iterable[_Union[TokenDigest, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "deployment_ids", "routes_generation", "metrics", "uptime_s", "draining", "load", "decisions_dropped", "drift_windows", "scored_keys")
    class DecisionsDroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_GENERATION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SCORED_KEYS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    deployment_ids: _containers.RepeatedScalarFieldContainer[str]
    routes_generation: int
    metrics: _containers.RepeatedCompositeFieldContainer[_routing_pb2.ArmMetrics]
    uptime_s: float
    draining: bool
    load: _types_pb2.AgentLoad
    decisions_dropped: _containers.ScalarMap[str, int]
    drift_windows: _containers.RepeatedCompositeFieldContainer[DriftWindow]
    scored_keys: _containers.RepeatedCompositeFieldContainer[ScoredKey]
    def __init__(self, agent_id: _Optional[str] = ..., deployment_ids: _Optional[_Iterable[str]] = ..., routes_generation: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[_routing_pb2.ArmMetrics, _Mapping]]] = ..., uptime_s: _Optional[float] = ..., draining: _Optional[bool] = ..., load: _Optional[_Union[_types_pb2.AgentLoad, _Mapping]] = ..., decisions_dropped: _Optional[_Mapping[str, int]] = ..., drift_windows: _Optional[_Iterable[_Union[DriftWindow, _Mapping]]] = ..., scored_keys: _Optional[_Iterable[_Union[ScoredKey, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known", "routes", "access_tokens")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    known: bool
    routes: _routing_pb2.RouteTable
    access_tokens: _containers.RepeatedCompositeFieldContainer[TokenDigest]
    def __init__(self, known: _Optional[bool] = ..., routes: _Optional[_Union[_routing_pb2.RouteTable, _Mapping]] = ..., access_tokens: _Optional[_Iterable[_Union[TokenDigest, _Mapping]]] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PushModelRequest(_message.Message):
    __slots__ = ("header", "data")
    class Header(_message.Message):
        __slots__ = ("name", "format", "sha256")
        NAME_FIELD_NUMBER: _ClassVar[int]
        FORMAT_FIELD_NUMBER: _ClassVar[int]
        SHA256_FIELD_NUMBER: _ClassVar[int]
        name: str
        format: str
        sha256: str
        def __init__(self, name: _Optional[str] = ..., format: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PushModelRequest.Header
    data: bytes
    def __init__(self, header: _Optional[_Union[PushModelRequest.Header, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_types_pb2.ModelVersion]
    def __init__(self, models: _Optional[_Iterable[_Union[_types_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("name", "alias", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    version: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("endpoint", "model", "version", "replicas", "batching", "resources", "selector", "engine", "require_approval", "no_wait")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    model: str
    version: str
    replicas: int
    batching: _types_pb2.Batching
    resources: _types_pb2.ResourceRequest
    selector: _containers.ScalarMap[str, str]
    engine: str
    require_approval: bool
    no_wait: bool
    def __init__(self, endpoint: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., replicas: _Optional[int] = ..., batching: _Optional[_Union[_types_pb2.Batching, _Mapping]] = ..., resources: _Optional[_Union[_types_pb2.ResourceRequest, _Mapping]] = ..., selector: _Optional[_Mapping[str, str]] = ..., engine: _Optional[str] = ..., require_approval: _Optional[bool] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class UndeployRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class UndeployResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[_types_pb2.Endpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[_types_pb2.Endpoint, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("agents", "models", "endpoints")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_types_pb2.AgentStatus]
    models: _containers.RepeatedCompositeFieldContainer[_types_pb2.ModelVersion]
    endpoints: _containers.RepeatedCompositeFieldContainer[_types_pb2.Endpoint]
    def __init__(self, agents: _Optional[_Iterable[_Union[_types_pb2.AgentStatus, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[_types_pb2.ModelVersion, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[_types_pb2.Endpoint, _Mapping]]] = ...) -> None: ...

class ArmSpec(_message.Message):
    __slots__ = ("name", "model", "version", "weight", "endpoint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    version: str
    weight: float
    endpoint: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., weight: _Optional[float] = ..., endpoint: _Optional[str] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("endpoint", "policy", "arms", "stacker", "replicas", "resources", "selector", "batching", "engine")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    STACKER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    policy: _routing_pb2.RoutingPolicy
    arms: _containers.RepeatedCompositeFieldContainer[ArmSpec]
    stacker: ArmSpec
    replicas: int
    resources: _types_pb2.ResourceRequest
    selector: _containers.ScalarMap[str, str]
    batching: _types_pb2.Batching
    engine: str
    def __init__(self, endpoint: _Optional[str] = ..., policy: _Optional[_Union[_routing_pb2.RoutingPolicy, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ArmSpec, _Mapping]]] = ..., stacker: _Optional[_Union[ArmSpec, _Mapping]] = ..., replicas: _Optional[int] = ..., resources: _Optional[_Union[_types_pb2.ResourceRequest, _Mapping]] = ..., selector: _Optional[_Mapping[str, str]] = ..., batching: _Optional[_Union[_types_pb2.Batching, _Mapping]] = ..., engine: _Optional[str] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("endpoint", "arm")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    arm: str
    def __init__(self, endpoint: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class ArmReport(_message.Message):
    __slots__ = ("arm", "model", "version", "requests", "errors", "error_rate", "p50_latency_ms", "p99_latency_ms", "mean_latency_ms", "predictions", "prediction_mean", "prediction_std", "feedback_count", "feedback_mean", "feedback_std", "shadow_compared", "shadow_mean_abs_diff")
    ARM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_MEAN_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_STD_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_MEAN_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_STD_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    arm: str
    model: str
    version: str
    requests: int
    errors: int
    error_rate: float
    p50_latency_ms: float
    p99_latency_ms: float
    mean_latency_ms: float
    predictions: int
    prediction_mean: float
    prediction_std: float
    feedback_count: float
    feedback_mean: float
    feedback_std: float
    shadow_compared: int
    shadow_mean_abs_diff: float
    def __init__(self, arm: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., p50_latency_ms: _Optional[float] = ..., p99_latency_ms: _Optional[float] = ..., mean_latency_ms: _Optional[float] = ..., predictions: _Optional[int] = ..., prediction_mean: _Optional[float] = ..., prediction_std: _Optional[float] = ..., feedback_count: _Optional[float] = ..., feedback_mean: _Optional[float] = ..., feedback_std: _Optional[float] = ..., shadow_compared: _Optional[int] = ..., shadow_mean_abs_diff: _Optional[float] = ...) -> None: ...

class ArmComparison(_message.Message):
    __slots__ = ("arm", "baseline", "metric", "difference", "test", "statistic", "p_value")
    ARM_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    arm: str
    baseline: str
    metric: str
    difference: float
    test: str
    statistic: float
    p_value: float
    def __init__(self, arm: _Optional[str] = ..., baseline: _Optional[str] = ..., metric: _Optional[str] = ..., difference: _Optional[float] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("endpoint", "arms", "comparisons")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    endpoint: _types_pb2.Endpoint
    arms: _containers.RepeatedCompositeFieldContainer[ArmReport]
    comparisons: _containers.RepeatedCompositeFieldContainer[ArmComparison]
    def __init__(self, endpoint: _Optional[_Union[_types_pb2.Endpoint, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ArmReport, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[ArmComparison, _Mapping]]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("endpoint", "key", "value", "arm", "values")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    key: str
    value: float
    arm: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, endpoint: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[float] = ..., arm: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("arm",)
    ARM_FIELD_NUMBER: _ClassVar[int]
    arm: str
    def __init__(self, arm: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("endpoint", "limit")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    limit: int
    def __init__(self, endpoint: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_pipelines_pb2.PipelineRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[_pipelines_pb2.PipelineRun, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "name", "role", "created_at", "expires_at", "revoked_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    role: str
    created_at: float
    expires_at: float
    revoked_at: float
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked_at: _Optional[float] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "role", "ttl_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    ttl_s: float
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    token: str
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class TokenDigest(_message.Message):
    __slots__ = ("token_id", "secret_sha256", "role", "expires_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    secret_sha256: str
    role: str
    expires_at: float
    def __init__(self, token_id: _Optional[str] = ..., secret_sha256: _Optional[str] = ..., role: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at", "actor", "action", "subject", "detail", "prev_sha256", "sha256")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PREV_SHA256_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: float
    actor: str
    action: str
    subject: str
    detail: str
    prev_sha256: str
    sha256: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., subject: _Optional[str] = ..., detail: _Optional[str] = ..., prev_sha256: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("after_seq", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ("expect_head",)
    EXPECT_HEAD_FIELD_NUMBER: _ClassVar[int]
    expect_head: str
    def __init__(self, expect_head: _Optional[str] = ...) -> None: ...

class VerifyAuditResponse(_message.Message):
    __slots__ = ("ok", "entries", "head_seq", "head_sha256", "problems")
    OK_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    entries: int
    head_seq: int
    head_sha256: str
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., entries: _Optional[int] = ..., head_seq: _Optional[int] = ..., head_sha256: _Optional[str] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class SetDecisionLogRequest(_message.Message):
    __slots__ = ("endpoint", "sample_rate")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    sample_rate: float
    def __init__(self, endpoint: _Optional[str] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class SetDecisionLogResponse(_message.Message):
    __slots__ = ("endpoint", "sample_rate")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    sample_rate: float
    def __init__(self, endpoint: _Optional[str] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class RecordValidationRequest(_message.Message):
    __slots__ = ("name", "version", "passed", "report_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    passed: bool
    report_json: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., passed: _Optional[bool] = ..., report_json: _Optional[str] = ...) -> None: ...

class ApproveModelRequest(_message.Message):
    __slots__ = ("name", "version", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    note: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RetireModelRequest(_message.Message):
    __slots__ = ("name", "version", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    note: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Validation(_message.Message):
    __slots__ = ("at", "actor", "passed", "report_json")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    at: float
    actor: str
    passed: bool
    report_json: str
    def __init__(self, at: _Optional[float] = ..., actor: _Optional[str] = ..., passed: _Optional[bool] = ..., report_json: _Optional[str] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("at", "actor", "note")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    at: float
    actor: str
    note: str
    def __init__(self, at: _Optional[float] = ..., actor: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("endpoint", "deployment_id", "state", "agent_ids")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    deployment_id: str
    state: str
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoint: _Optional[str] = ..., deployment_id: _Optional[str] = ..., state: _Optional[str] = ..., agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelDetails(_message.Message):
    __slots__ = ("model", "validations", "approvals", "placements", "audit", "retired_note")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VALIDATIONS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_NOTE_FIELD_NUMBER: _ClassVar[int]
    model: _types_pb2.ModelVersion
    validations: _containers.RepeatedCompositeFieldContainer[Validation]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    placements: _containers.RepeatedCompositeFieldContainer[Placement]
    audit: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    retired_note: str
    def __init__(self, model: _Optional[_Union[_types_pb2.ModelVersion, _Mapping]] = ..., validations: _Optional[_Iterable[_Union[Validation, _Mapping]]] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., placements: _Optional[_Iterable[_Union[Placement, _Mapping]]] = ..., audit: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., retired_note: _Optional[str] = ...) -> None: ...

class SetEndpointApprovalRequest(_message.Message):
    __slots__ = ("endpoint", "require_approval")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    require_approval: bool
    def __init__(self, endpoint: _Optional[str] = ..., require_approval: _Optional[bool] = ...) -> None: ...

class BinCounts(_message.Message):
    __slots__ = ("name", "counts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class DriftWindow(_message.Message):
    __slots__ = ("endpoint", "deployment_id", "seq", "opened_at", "closed_at", "rows", "counts")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    deployment_id: str
    seq: int
    opened_at: float
    closed_at: float
    rows: int
    counts: _containers.RepeatedCompositeFieldContainer[BinCounts]
    def __init__(self, endpoint: _Optional[str] = ..., deployment_id: _Optional[str] = ..., seq: _Optional[int] = ..., opened_at: _Optional[float] = ..., closed_at: _Optional[float] = ..., rows: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[BinCounts, _Mapping]]] = ...) -> None: ...

class ScoredKey(_message.Message):
    __slots__ = ("endpoint", "key", "arm", "prediction", "at", "attributes", "predictions", "columns")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ColumnValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ColumnValues, _Mapping]] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    key: str
    arm: str
    prediction: float
    at: float
    attributes: _containers.ScalarMap[str, str]
    predictions: _containers.RepeatedScalarFieldContainer[float]
    columns: _containers.MessageMap[str, ColumnValues]
    def __init__(self, endpoint: _Optional[str] = ..., key: _Optional[str] = ..., arm: _Optional[str] = ..., prediction: _Optional[float] = ..., at: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ..., predictions: _Optional[_Iterable[float]] = ..., columns: _Optional[_Mapping[str, ColumnValues]] = ...) -> None: ...

class ColumnValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class HealthConfig(_message.Message):
    __slots__ = ("endpoint", "thresholds", "group_attributes", "favourable", "webhook_url", "performance_window", "fallback_arm", "fairness_window")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FAVOURABLE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ARM_FIELD_NUMBER: _ClassVar[int]
    FAIRNESS_WINDOW_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    thresholds: _containers.ScalarMap[str, float]
    group_attributes: _containers.RepeatedScalarFieldContainer[str]
    favourable: str
    webhook_url: str
    performance_window: int
    fallback_arm: str
    fairness_window: int
    def __init__(self, endpoint: _Optional[str] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., group_attributes: _Optional[_Iterable[str]] = ..., favourable: _Optional[str] = ..., webhook_url: _Optional[str] = ..., performance_window: _Optional[int] = ..., fallback_arm: _Optional[str] = ..., fairness_window: _Optional[int] = ...) -> None: ...

class SetHealthConfigRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: HealthConfig
    def __init__(self, config: _Optional[_Union[HealthConfig, _Mapping]] = ...) -> None: ...

class GetHealthRequest(_message.Message):
    __slots__ = ("endpoint", "windows")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    windows: int
    def __init__(self, endpoint: _Optional[str] = ..., windows: _Optional[int] = ...) -> None: ...

class HealthStatistic(_message.Message):
    __slots__ = ("name", "value", "threshold", "alert")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    threshold: float
    alert: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., alert: _Optional[bool] = ...) -> None: ...

class FeatureHealth(_message.Message):
    __slots__ = ("name", "statistics", "bins", "baseline", "live", "alert")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    name: str
    statistics: _containers.RepeatedCompositeFieldContainer[HealthStatistic]
    bins: _containers.RepeatedScalarFieldContainer[str]
    baseline: _containers.RepeatedScalarFieldContainer[float]
    live: _containers.RepeatedScalarFieldContainer[float]
    alert: bool
    def __init__(self, name: _Optional[str] = ..., statistics: _Optional[_Iterable[_Union[HealthStatistic, _Mapping]]] = ..., bins: _Optional[_Iterable[str]] = ..., baseline: _Optional[_Iterable[float]] = ..., live: _Optional[_Iterable[float]] = ..., alert: _Optional[bool] = ...) -> None: ...

class HealthWindow(_message.Message):
    __slots__ = ("agent_id", "seq", "opened_at", "closed_at", "rows", "features", "prediction")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    opened_at: float
    closed_at: float
    rows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureHealth]
    prediction: FeatureHealth
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., opened_at: _Optional[float] = ..., closed_at: _Optional[float] = ..., rows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureHealth, _Mapping]]] = ..., prediction: _Optional[_Union[FeatureHealth, _Mapping]] = ...) -> None: ...

class DeploymentHealth(_message.Message):
    __slots__ = ("deployment_id", "arm", "model", "version", "has_baseline", "message", "windows", "number", "all_agents")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HAS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ALL_AGENTS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    arm: str
    model: str
    version: str
    has_baseline: bool
    message: str
    windows: _containers.RepeatedCompositeFieldContainer[HealthWindow]
    number: int
    all_agents: HealthWindow
    def __init__(self, deployment_id: _Optional[str] = ..., arm: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., has_baseline: _Optional[bool] = ..., message: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[HealthWindow, _Mapping]]] = ..., number: _Optional[int] = ..., all_agents: _Optional[_Union[HealthWindow, _Mapping]] = ...) -> None: ...

class PerformanceWindow(_message.Message):
    __slots__ = ("arm", "index", "outcomes", "first_at", "last_at", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    FIRST_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    arm: str
    index: int
    outcomes: int
    first_at: float
    last_at: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, arm: _Optional[str] = ..., index: _Optional[int] = ..., outcomes: _Optional[int] = ..., first_at: _Optional[float] = ..., last_at: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetHealthResponse(_message.Message):
    __slots__ = ("endpoint", "config", "deployments", "task", "performance")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    config: HealthConfig
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentHealth]
    task: str
    performance: _containers.RepeatedCompositeFieldContainer[PerformanceWindow]
    def __init__(self, endpoint: _Optional[str] = ..., config: _Optional[_Union[HealthConfig, _Mapping]] = ..., deployments: _Optional[_Iterable[_Union[DeploymentHealth, _Mapping]]] = ..., task: _Optional[str] = ..., performance: _Optional[_Iterable[_Union[PerformanceWindow, _Mapping]]] = ...) -> None: ...

class GetFairnessRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class GroupFairness(_message.Message):
    __slots__ = ("group", "predictions", "selection_rate", "impact_ratio", "outcomes", "true_positive_rate", "false_positive_rate", "alert", "first_at", "last_at")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_RATE_FIELD_NUMBER: _ClassVar[int]
    IMPACT_RATIO_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    TRUE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    FIRST_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    group: str
    predictions: int
    selection_rate: float
    impact_ratio: float
    outcomes: int
    true_positive_rate: float
    false_positive_rate: float
    alert: bool
    first_at: float
    last_at: float
    def __init__(self, group: _Optional[str] = ..., predictions: _Optional[int] = ..., selection_rate: _Optional[float] = ..., impact_ratio: _Optional[float] = ..., outcomes: _Optional[int] = ..., true_positive_rate: _Optional[float] = ..., false_positive_rate: _Optional[float] = ..., alert: _Optional[bool] = ..., first_at: _Optional[float] = ..., last_at: _Optional[float] = ...) -> None: ...

class GetFairnessResponse(_message.Message):
    __slots__ = ("endpoint", "attributes", "favourable", "groups", "message", "window")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FAVOURABLE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    attributes: _containers.RepeatedScalarFieldContainer[str]
    favourable: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupFairness]
    message: str
    window: int
    def __init__(self, endpoint: _Optional[str] = ..., attributes: _Optional[_Iterable[str]] = ..., favourable: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupFairness, _Mapping]]] = ..., message: _Optional[str] = ..., window: _Optional[int] = ...) -> None: ...
