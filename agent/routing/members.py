"""Remote members: a deployment on another agent, behind the same LoadedModel interface.

A RemoteModel calls the other agent's Open Inference Protocol ``ModelInfer``
with the request parameter ``milepost-deployment`` set to the deployment id,
so the other agent scores exactly that deployment and does not route again.
Routing treats it like a local model: ``predict(batch) -> batch``.

- One gRPC channel per address, shared by every remote member (``Channels``).
- Addresses are taken round-robin; an address that answers UNAVAILABLE (or
  NOT_FOUND: the route is stale and the deployment has left it) is given up
  for this call and the next tried, up to every address within the deadline
  (scoring is idempotent). One that answered UNAVAILABLE is tried after the
  others for ``SUSPECT_S``, so calls during an agent's death do not each wait
  on it first (the channel of a dead peer fails fast, a hung one does not).
- The caller's deadline (``predict(batch, deadline)``) travels with the call;
  without one, calls get ``call_timeout_s`` (settings: remote_call_timeout_s).
- Schemas, version and engine are learned on first need from the other
  agent's ``ModelConfig`` for the deployment id (see dataplane), then kept:
  a deployment id always names the same model version.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pyarrow as pa

from engines.base import LoadedModel
from milepost.core import auth, deadlines, tensor_codec, tracing
from milepost.core.deadlines import Deadline
from milepost.core.description import ModelDescription
from milepost.core.errors import DeadlineExceeded, MilepostError, Unavailable
from milepost.core.inline import refuse_blocking
from milepost.core.tls import Tls, open_channel
from milepost.inference import grpc_predict_v2_pb2 as pb
from milepost.inference import grpc_predict_v2_pb2_grpc as pb_grpc

DEPLOYMENT_PARAMETER = "milepost-deployment"
_RETRY_ON = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)
SUSPECT_S = 5.0
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class Channels:
    """One channel per peer address (TLS when the agent has it), made on first use and kept until close.

    ``token`` (read at each call) is the cluster's own identity on calls to other agents: the
    coordinator's control token, which every agent of the cluster holds and accepts, so that a
    peer requiring tokens on inference takes the call, and can tell it from a client's."""

    def __init__(self, tls: Tls | None = None, token: Callable[[], str] | None = None) -> None:
        self._tls = tls
        self._token = token
        self._lock = threading.Lock()
        self._stubs: dict[str, tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]] = {}

    def stub(self, address: str) -> pb_grpc.GRPCInferenceServiceStub:
        found = self._stubs.get(address)
        if found is None:
            with self._lock:
                found = self._stubs.get(address)
                if found is None:
                    channel = open_channel(address, self._tls, _CHANNEL_OPTIONS)
                    if self._token is not None:
                        channel = auth.with_token(channel, self._token)
                    found = (channel, pb_grpc.GRPCInferenceServiceStub(channel))
                    self._stubs[address] = found
        return found[1]

    def close(self) -> None:
        with self._lock:
            stubs, self._stubs = self._stubs, {}
        for channel, _ in stubs.values():
            channel.close()


class RemoteModel(LoadedModel):
    """A deployment served by other agents, reached over the data plane."""

    def __init__(self, deployment_id: str, addresses: tuple[str, ...], channels: Channels,
                 describe_cache: dict[str, ModelDescription] | None = None, *,
                 call_timeout_s: float, describe_timeout_s: float) -> None:
        if not addresses:
            raise ValueError(f"remote deployment {deployment_id} needs at least one address")
        self.deployment_id = deployment_id
        self.addresses = addresses
        self._channels = channels
        self._turn = itertools.count()
        self._suspects: dict[str, float] = {}  # address -> until when it is tried last
        self._described = describe_cache if describe_cache is not None else {}
        self._known_version = ""
        self._call_timeout_s = call_timeout_s
        self._describe_timeout_s = describe_timeout_s

    # ---- LoadedModel ----
    @property
    def input_schema(self) -> pa.Schema:
        return self.describe().input_schema

    @property
    def output_schema(self) -> pa.Schema:
        return self.describe().output_schema

    @property
    def version(self) -> str:  # type: ignore[override]  # learned on first use, not at construction
        return self._known_version or self.describe().version

    @property
    def platform(self) -> str:  # type: ignore[override]  # learned on first use, not at construction
        return self.describe().platform

    def predict(self, batch: pa.RecordBatch, deadline: Deadline = None) -> pa.RecordBatch:
        refuse_blocking("scoring on another agent waits for its answer")
        request = pb.ModelInferRequest(model_name=self.deployment_id)
        request.parameters[DEPLOYMENT_PARAMETER].string_param = self.deployment_id
        tensor_codec.encode_inputs(batch, request)
        timeout = deadlines.remaining(deadline, self._call_timeout_s)
        if tracing.enabled():
            response = self._traced_infer(request, timeout, batch.num_rows)
        else:
            response = self._call("ModelInfer", request, timeout)
        if response.model_version:
            self._known_version = response.model_version
        return tensor_codec.decode_outputs(response)

    # ---- what it is ----
    @property
    def described(self) -> bool:
        return self.deployment_id in self._described

    def describe(self) -> ModelDescription:
        found = self._described.get(self.deployment_id)
        if found is not None:
            return found
        reply = self._call("ModelConfig", pb.ModelConfigRequest(name=self.deployment_id), self._describe_timeout_s)
        found = ModelDescription.from_proto(reply.config)
        self._described[self.deployment_id] = found
        return found

    # ---- the calls ----
    def _traced_infer(self, request: pb.ModelInferRequest, timeout: float | None, rows: int) -> Any:
        """ModelInfer in a span whose context travels in the call's metadata (W3C traceparent),
        so that the other agent's spans of this request join its trace (milepost.core.tracing)."""
        with tracing.span("milepost.remote") as span:
            span.set_attribute("milepost.deployment", self.deployment_id)
            span.set_attribute("milepost.rows", rows)
            return self._call("ModelInfer", request, timeout, tracing.outgoing())

    def _call(self, method: str, request: object, timeout: float | None,
              metadata: tuple[tuple[str, str], ...] | None = None) -> Any:
        """One call to the next address, then to the others while they are unavailable;
        ``timeout`` covers them all; ``metadata`` goes with each."""
        deadline = deadlines.after(timeout)
        start = next(self._turn) % len(self.addresses)
        now = time.monotonic()
        order = sorted(self.addresses[start:] + self.addresses[:start], key=lambda a: self._suspects.get(a, 0.0) > now)
        last: grpc.RpcError | None = None
        for address in order:
            left = deadlines.remaining(deadline)
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"deadline passed before calling deployment {self.deployment_id} on {address}")
            try:
                return getattr(self._channels.stub(address), method)(request, timeout=left, metadata=metadata)
            except grpc.RpcError as err:
                if MilepostError.from_status(err).code not in _RETRY_ON:
                    raise _as_error(err, self.deployment_id, address) from err
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    self._suspects[address] = time.monotonic() + SUSPECT_S
                last = err
        assert last is not None
        error = _as_error(last, self.deployment_id, order[-1])
        if not isinstance(error, Unavailable):  # NOT_FOUND from a stale replica list
            error = Unavailable(error.message)
        raise error from last


def _as_error(err: grpc.RpcError, deployment_id: str, address: str) -> MilepostError:
    return MilepostError.from_status(err, f"deployment {deployment_id} on agent {address}")

