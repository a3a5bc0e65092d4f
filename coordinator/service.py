"""CoordinatorService: the registry, endpoints, routing and agents, over gRPC.

Handlers validate, then change state through the Store (in transactions) and
the Endpoints manager, and ask the Reconciler and RouteBook to bring agents in
line. They raise MilepostErrors; the shared interceptor turns them into statuses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import grpc

from coordinator import audit, report
from coordinator.arm_stats import ArmStats
from coordinator.artifacts import ArtifactStore
from coordinator.decision_drops import DecisionDrops
from coordinator.endpoints import Endpoints, Placement, policy_of
from coordinator.governance import Governance
from coordinator.health import HealthBook
from coordinator.health_service import HealthHandlers
from coordinator.messages import audit_message, endpoint_message, model_message
from coordinator.pipelines import FINISHED, Pipelines
from coordinator.reconciler import Reconciler
from coordinator.review_service import ReviewHandlers
from coordinator.routes import RouteBook
from coordinator.store import RunRecord, Store
from coordinator.tokens import TokenBook
from coordinator.versions import Registry
from milepost.core import deadlines
from milepost.core.auth import current_identity
from milepost.core.batching import BatchingSettings
from milepost.core.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from milepost.core.names import check_name
from milepost.core.requirements import Requirements
from milepost.core.routing.policy import Arm, build
from milepost.v1 import coordinator_pb2 as pb
from milepost.v1 import coordinator_pb2_grpc, pipelines_pb2, routing_pb2, types_pb2

MAX_PAGE = 1000  # rows one list call answers, whatever it asks for: a reply stays bounded


def _page(limit: int, default: int) -> int:
    return default if limit <= 0 else min(limit, MAX_PAGE)


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The caller's time left, less a margin to answer in: the budget for calls to agents."""
    remaining = deadlines.remaining(deadlines.from_grpc(context))
    return None if remaining is None else max(remaining - 0.5, 0.1)


class CoordinatorServicer(ReviewHandlers, HealthHandlers, coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(
        self, store: Store, artifacts: ArtifactStore, reconciler: Reconciler, endpoints: Endpoints,
        routes: RouteBook, stats: ArmStats, pipelines: Pipelines, tokens: TokenBook, registry: Registry,
        governance: Governance, *, heartbeat_interval_s: float, clock: Callable[[], float],
        health: HealthBook | None = None,
    ) -> None:
        self.registry = registry
        self.governance = governance
        self.pipelines = pipelines
        self.tokens = tokens
        self._registering: set[str] = set()  # registered, first heartbeat not yet seen
        self.store = store
        self.artifacts = artifacts
        self.reconciler = reconciler
        self.endpoints = endpoints
        self.routes = routes
        self.stats = stats
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.decision_drops = DecisionDrops(store, clock)
        self.health = health or HealthBook(store, clock)

    # ---- agents ----
    def RegisterAgent(self, request: pb.RegisterAgentRequest, context: grpc.ServicerContext) -> pb.RegisterAgentResponse:
        info = request.agent
        check_name("agent", info.agent_id)
        if not info.address:
            raise InvalidArgument("agent.address is required (host:port of the agent's gRPC server)")
        self.tokens.bind_agent(info.agent_id, current_identity())
        self.store.upsert_agent(info.agent_id, info.address, info.SerializeToString(), self.clock())
        # Placing on it waits for its first heartbeat: until it has this reply it does not know
        # the control token, and would refuse the loads.
        self._registering.add(info.agent_id)
        return pb.RegisterAgentResponse(
            agent_id=info.agent_id, heartbeat_interval_s=self.heartbeat_interval_s, ttl_s=self.reconciler.ttl_s,
            control_token=self.tokens.control_token, access_tokens=self.tokens.digests(),
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        self.tokens.bind_agent(request.agent_id, current_identity())
        was_live = request.agent_id in self.reconciler.live_agents() and request.agent_id not in self._registering
        if not self.store.touch_agent(request.agent_id, self.clock()):
            return pb.HeartbeatResponse(known=False)
        if not was_live:
            # New or back from lost: place what waits for it before diffing what it serves.
            self._registering.discard(request.agent_id)
            self.reconciler.repair()
        self.stats.record(request.agent_id, request.uptime_s, list(request.metrics))
        self.decision_drops.record(request.agent_id, request.decisions_dropped)
        self.health.record(request.agent_id, request.drift_windows, request.scored_keys)
        if self.reconciler.reports.record(request.agent_id, request.deployment_ids,
                                          draining=request.draining, load=request.load):
            self.routes.push()  # it drains, or serves a replica more or less: peers route accordingly
        self.reconciler.reconcile_agent(request.agent_id, set(request.deployment_ids))
        table = self.routes.current()
        access = self.tokens.digests()
        if request.routes_generation != table.generation:
            return pb.HeartbeatResponse(known=True, routes=table, access_tokens=access)
        return pb.HeartbeatResponse(known=True, access_tokens=access)

    def FetchModel(self, request: pb.FetchModelRequest, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk]:
        record = self.registry.resolve(request.name, request.version)
        for chunk in self.artifacts.read(record.version):
            yield pb.ModelChunk(data=chunk)

    # ---- registry ----
    def PushModel(self, request_iterator: Iterator[pb.PushModelRequest], context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("PushModel: the first message must carry a header (name, format)")
        header = first.header
        check_name("model", header.name)
        if header.format != "bundle":
            raise InvalidArgument(
                f"PushModel: header.format {shown(header.format)} is not supported; send 'bundle' "
                "(the client compiles XGBoost and LightGBM files into bundles)"
            )

        def chunks() -> Iterator[bytes]:
            yield first.data
            for message in request_iterator:
                yield message.data

        return model_message(self.registry.push(header.name, chunks(), header.sha256))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_message(m) for m in self.store.list_models(request.name)])

    def SetAlias(self, request: pb.SetAliasRequest, context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        return model_message(self.registry.set_alias(request.name, request.alias, request.version))

    def DeleteModel(self, request: pb.DeleteModelRequest, context: grpc.ServicerContext) -> types_pb2.ModelVersion:
        return model_message(self.registry.delete(request.name, request.version))

    # ---- endpoints ----
    def Deploy(self, request: pb.DeployRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        check_name("endpoint", request.endpoint)
        placement = _placement(request)
        arm = Arm("primary", model=request.model, version=request.version, weight=1.0)
        endpoint = self.endpoints.set_policy(
            request.endpoint, routing_pb2.RoutingPolicy(kind="single"), [arm], placement,
            timeout=_timeout(context), event="deploy", require_approval=request.require_approval,
            wait=not request.no_wait,
        )
        self.stats.reset(request.endpoint)
        return endpoint_message(endpoint)

    def SetPolicy(self, request: pb.SetPolicyRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        check_name("endpoint", request.endpoint)
        placement = _placement(request)
        arms = [Arm.from_spec(a) for a in request.arms]
        stacker = Arm.from_spec(request.stacker, name="stacker") if request.HasField("stacker") else None
        policy = routing_pb2.RoutingPolicy()
        policy.CopyFrom(request.policy)
        self.health.check_canary_gates(request.endpoint, policy.gates)
        endpoint = self.endpoints.set_policy(
            request.endpoint, policy, arms, placement, stacker=stacker, timeout=_timeout(context),
        )
        self.stats.reset(request.endpoint)
        return endpoint_message(endpoint)

    def SetDecisionLog(self, request: pb.SetDecisionLogRequest, context: grpc.ServicerContext) -> pb.SetDecisionLogResponse:
        self.endpoints.set_decision_log(request.endpoint, request.sample_rate)
        return pb.SetDecisionLogResponse(endpoint=request.endpoint, sample_rate=request.sample_rate)

    def Promote(self, request: pb.PromoteRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        return endpoint_message(self.endpoints.promote(request.endpoint, request.arm))

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> types_pb2.Endpoint:
        return endpoint_message(self.endpoints.rollback(request.endpoint))

    def Undeploy(self, request: pb.UndeployRequest, context: grpc.ServicerContext) -> pb.UndeployResponse:
        referrers = [
            e.name for e in self.store.list_endpoints()
            if e.policy_blob and any(a.endpoint == request.endpoint for a in policy_of(e).arms)
        ]
        if referrers:
            raise FailedPrecondition(f"endpoint {request.endpoint!r} is an arm of {referrers}; change those first")
        self.endpoints.undeploy(request.endpoint)
        self.stats.reset(request.endpoint)
        return pb.UndeployResponse()

    def ListEndpoints(self, request: pb.ListEndpointsRequest, context: grpc.ServicerContext) -> pb.ListEndpointsResponse:
        return pb.ListEndpointsResponse(endpoints=[endpoint_message(e) for e in self.store.list_endpoints()])

    def Report(self, request: pb.ReportRequest, context: grpc.ServicerContext) -> pb.ReportResponse:
        endpoint = self.endpoints.get(request.endpoint)
        arms, comparisons = report.build(
            endpoint, policy_of(endpoint), self.stats.totals(endpoint.name), self.store.rewards(endpoint.name)
        )
        return pb.ReportResponse(endpoint=endpoint_message(endpoint), arms=arms, comparisons=comparisons)

    def Feedback(self, request: pb.FeedbackRequest, context: grpc.ServicerContext) -> pb.FeedbackResponse:
        values = list(request.values)
        if not all(math.isfinite(v) for v in (request.value, *values)):
            raise InvalidArgument(f"feedback values must be finite numbers, got {values}" if values else
                                  f"feedback value must be a finite number, got {request.value}")
        endpoint = self.endpoints.get(request.endpoint)
        policy = policy_of(endpoint)
        arm = request.arm or self._arm_for_key(request.endpoint, policy, request.key, _timeout(context))
        if arm not in {a.name for a in policy.arms}:
            raise NotFound(f"endpoint {request.endpoint!r} has no arm {shown(arm)}; arms: {[a.name for a in policy.arms]}")
        # A request's reward: the mean of its rows' outcomes.
        self.store.add_reward(request.endpoint, arm, sum(values) / len(values) if values else request.value)
        self.health.outcome(request.endpoint, request.key, arm, request.value, values)
        if policy.kind == "bandit":
            self.routes.push()  # bandits learn from the new reward at once
        return pb.FeedbackResponse(arm=arm)

    def _arm_for_key(self, endpoint: str, policy: routing_pb2.RoutingPolicy, key: str, timeout: float | None) -> str:
        """The arm that served the key, as the agents remember it (the most recent, among the
        policy's arms); failing that, the policy's sticky rule.

        The rule is exact for single, split and canary while their weights (or the
        canary's step) are as they were when the key was served: they pin a key by its
        hash. A bandit's choice also depends on the rewards the agent held, which every
        feedback changes, so it cannot be recomputed: with no agent remembering the key,
        feedback on a bandit needs the arm (see milepost.core.routing.bandit)."""
        if not key:
            raise InvalidArgument("feedback needs the request key or the arm that served it")
        if policy.kind == "ensemble":
            raise InvalidArgument("an ensemble's answer comes from every member; pass the arm to credit")
        addresses = [info.address for info in self.reconciler.live_agents().values()]
        names = {a.name for a in policy.arms}
        remembered = [r for r in self.reconciler.agents.served_arms(addresses, endpoint, key, timeout) if r[0] in names]
        if remembered:
            return max(remembered, key=lambda r: r[1])[0]
        if policy.kind == "bandit":
            raise FailedPrecondition(
                f"no agent remembers serving key {shown(key)} on endpoint {endpoint!r} (served long ago, by an agent "
                "that has restarted since, or never); pass the arm that served it: --arm, the milepost-arm "
                "parameter of its response"
            )
        return build(endpoint, policy, 0).choose(key, lambda _arm: True).arms[0].name

    def ListEvents(self, request: pb.ListEventsRequest, context: grpc.ServicerContext) -> pb.ListEventsResponse:
        events = self.store.list_events(request.endpoint, _page(request.limit, 100))
        return pb.ListEventsResponse(events=[
            types_pb2.Event(id=e.id, endpoint=e.endpoint, at=e.at, kind=e.kind, message=e.message) for e in events
        ])

    # ---- pipelines ----
    def SubmitPipeline(self, request: pipelines_pb2.PipelineSpec, context: grpc.ServicerContext) -> pipelines_pb2.PipelineRun:
        return run_message(self.pipelines.submit(request))

    def ListRuns(self, request: pb.ListRunsRequest, context: grpc.ServicerContext) -> pb.ListRunsResponse:
        return pb.ListRunsResponse(runs=[run_message(r) for r in self.store.list_runs(_page(request.limit, 50))])

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pipelines_pb2.PipelineRun:
        return run_message(self.pipelines.get(request.run_id))

    def WatchRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> Iterator[pipelines_pb2.PipelineRun]:
        last = None
        while context.is_active():
            current = run_message(self.pipelines.get(request.run_id))
            if current != last:
                yield current
                last = current
            if current.state in FINISHED:
                return
            self.pipelines.wait_for_change(0.5)

    def CancelRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pipelines_pb2.PipelineRun:
        return run_message(self.pipelines.cancel(request.run_id))

    # ---- identities ----
    def CreateToken(self, request: pb.CreateTokenRequest, context: grpc.ServicerContext) -> pb.CreateTokenResponse:
        info, token = self.tokens.create(request.name, request.role, request.ttl_s)
        return pb.CreateTokenResponse(info=info, token=token)

    def ListTokens(self, request: pb.ListTokensRequest, context: grpc.ServicerContext) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=self.tokens.infos())

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext) -> pb.TokenInfo:
        return self.tokens.revoke(request.token)

    # ---- the audit trail ----
    def ListAudit(self, request: pb.ListAuditRequest, context: grpc.ServicerContext) -> pb.ListAuditResponse:
        if not 0 <= request.limit <= MAX_PAGE or request.after_seq < 0:
            raise InvalidArgument(f"ListAudit: after_seq must be >= 0 and limit between 0 and {MAX_PAGE}")
        entries = self.store.audit_entries(request.after_seq, request.limit or MAX_PAGE)
        return pb.ListAuditResponse(entries=[audit_message(e) for e in entries])

    def VerifyAudit(self, request: pb.VerifyAuditRequest, context: grpc.ServicerContext) -> pb.VerifyAuditResponse:
        expected = audit.parse_head(request.expect_head) if request.expect_head else None
        return self.store.verify_audit(expected).to_proto()

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        live = self.reconciler.live_agents()
        hosted: dict[str, list[str]] = {}
        for d in self.store.list_deployments():
            for a in d.agent_ids:
                hosted.setdefault(a, []).append(d.deployment_id)
        reports = self.reconciler.reports
        agents = [
            types_pb2.AgentStatus(
                info=types_pb2.AgentInfo.FromString(rec.info),
                state="LOST" if rec.agent_id not in live else "DRAINING" if reports.draining(rec.agent_id) else "ALIVE",
                last_heartbeat=rec.last_heartbeat,
                deployment_ids=hosted.get(rec.agent_id, []),
                load=reports.load(rec.agent_id),
                serving_deployment_ids=reports.serving(rec.agent_id, hosted.get(rec.agent_id, [])),
            )
            for rec in self.store.list_agents()
        ]
        return pb.GetStatusResponse(
            agents=agents,
            models=[model_message(m) for m in self.store.list_models()],
            endpoints=[endpoint_message(e) for e in self.store.list_endpoints()],
        )


def _placement(request: pb.DeployRequest | pb.SetPolicyRequest) -> Placement:
    return Placement(
        replicas=request.replicas,
        requirements=Requirements.from_proto(request.resources, request.selector, request.engine),
        batching=BatchingSettings.from_proto(request.batching),
        device=request.resources.device,
    )


def run_message(r: RunRecord) -> pipelines_pb2.PipelineRun:
    return pipelines_pb2.PipelineRun(
        run_id=r.run_id, pipeline=r.pipeline, state=r.state, created_at=r.created_at, finished_at=r.finished_at,
        spec=pipelines_pb2.PipelineSpec.FromString(r.spec),
        stages=[
            pipelines_pb2.StageRun(
                name=s.name, state=s.state, agent_id=s.agent_id, message=s.message, started_at=s.started_at,
                finished_at=s.finished_at, rows=s.rows, outputs=json.loads(s.outputs_json),
            )
            for s in r.stages
        ],
    )
