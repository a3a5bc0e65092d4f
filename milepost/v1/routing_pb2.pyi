from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Arm(_message.Message):
    __slots__ = ("name", "deployment_id", "endpoint", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    deployment_id: str
    endpoint: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., deployment_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class CanaryGates(_message.Message):
    __slots__ = ("max_error_rate", "max_p99_latency_ms", "max_divergence", "min_requests", "max_drift", "max_impact_ratio_drop")
    class MaxDriftEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DIVERGENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_DRIFT_FIELD_NUMBER: _ClassVar[int]
    MAX_IMPACT_RATIO_DROP_FIELD_NUMBER: _ClassVar[int]
    max_error_rate: float
    max_p99_latency_ms: float
    max_divergence: float
    min_requests: int
    max_drift: _containers.ScalarMap[str, float]
    max_impact_ratio_drop: float
    def __init__(self, max_error_rate: _Optional[float] = ..., max_p99_latency_ms: _Optional[float] = ..., max_divergence: _Optional[float] = ..., min_requests: _Optional[int] = ..., max_drift: _Optional[_Mapping[str, float]] = ..., max_impact_ratio_drop: _Optional[float] = ...) -> None: ...

class ArmReward(_message.Message):
    __slots__ = ("arm", "count", "sum", "sum_squares")
    ARM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUM_SQUARES_FIELD_NUMBER: _ClassVar[int]
    arm: str
    count: float
    sum: float
    sum_squares: float
    def __init__(self, arm: _Optional[str] = ..., count: _Optional[float] = ..., sum: _Optional[float] = ..., sum_squares: _Optional[float] = ...) -> None: ...

class RoutingPolicy(_message.Message):
    __slots__ = ("kind", "arms", "key_parameter", "steps", "step", "window_s", "gates", "shadow_fraction", "combiner", "stacker_deployment_id", "on_member_failure", "member_timeout_s", "bandit", "epsilon", "rewards")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    KEY_PARAMETER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    COMBINER_FIELD_NUMBER: _ClassVar[int]
    STACKER_DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_MEMBER_FAILURE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    key_parameter: str
    steps: _containers.RepeatedScalarFieldContainer[float]
    step: int
    window_s: float
    gates: CanaryGates
    shadow_fraction: float
    combiner: str
    stacker_deployment_id: str
    on_member_failure: str
    member_timeout_s: float
    bandit: str
    epsilon: float
    rewards: _containers.RepeatedCompositeFieldContainer[ArmReward]
    def __init__(self, kind: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., key_parameter: _Optional[str] = ..., steps: _Optional[_Iterable[float]] = ..., step: _Optional[int] = ..., window_s: _Optional[float] = ..., gates: _Optional[_Union[CanaryGates, _Mapping]] = ..., shadow_fraction: _Optional[float] = ..., combiner: _Optional[str] = ..., stacker_deployment_id: _Optional[str] = ..., on_member_failure: _Optional[str] = ..., member_timeout_s: _Optional[float] = ..., bandit: _Optional[str] = ..., epsilon: _Optional[float] = ..., rewards: _Optional[_Iterable[_Union[ArmReward, _Mapping]]] = ...) -> None: ...

class Addresses(_message.Message):
    __slots__ = ("addresses",)
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("endpoint", "policy", "replicas", "decision_sample_rate")
    class ReplicasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Addresses
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Addresses, _Mapping]] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DECISION_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    policy: RoutingPolicy
    replicas: _containers.MessageMap[str, Addresses]
    decision_sample_rate: float
    def __init__(self, endpoint: _Optional[str] = ..., policy: _Optional[_Union[RoutingPolicy, _Mapping]] = ..., replicas: _Optional[_Mapping[str, Addresses]] = ..., decision_sample_rate: _Optional[float] = ...) -> None: ...

class RouteTable(_message.Message):
    __slots__ = ("generation", "routes")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    generation: int
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, generation: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class ArmMetrics(_message.Message):
    __slots__ = ("endpoint", "arm", "requests", "errors", "latency_buckets", "latency_sum_ms", "predictions", "prediction_sum", "prediction_sum_squares", "shadow_compared", "shadow_abs_diff_sum")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SUM_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_SUM_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_SUM_SQUARES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COMPARED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ABS_DIFF_SUM_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    arm: str
    requests: int
    errors: int
    latency_buckets: _containers.RepeatedScalarFieldContainer[int]
    latency_sum_ms: float
    predictions: int
    prediction_sum: float
    prediction_sum_squares: float
    shadow_compared: int
    shadow_abs_diff_sum: float
    def __init__(self, endpoint: _Optional[str] = ..., arm: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., latency_buckets: _Optional[_Iterable[int]] = ..., latency_sum_ms: _Optional[float] = ..., predictions: _Optional[int] = ..., prediction_sum: _Optional[float] = ..., prediction_sum_squares: _Optional[float] = ..., shadow_compared: _Optional[int] = ..., shadow_abs_diff_sum: _Optional[float] = ...) -> None: ...
