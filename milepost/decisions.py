"""Reading agents' decision logs, and replaying a logged decision on CPU.

Decisions stay where they were made, on each agent (agent.decision_log); the
coordinator only says which agents there are (GetStatus). A reader asks every
live agent directly (ListDecisions, role viewer, the same token as scoring):
the coordinator stays off the data path and never relays logged data, and an
agent that served the endpoint before a move still answers for what it logged.
A decision id starts with the id of the agent that holds it, so one decision is
fetched from that agent alone.

Replay fetches the logged model version's bundle from the coordinator, checks its
content hash against the logged digest, scores the logged inputs with the
scoring core on this machine's CPU and compares every output bit for bit; explain
runs the scoring core's explainer (scoring_core.explain) on the same inputs.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from milepost.client import Client
from milepost.core import auth
from milepost.core.errors import DataLoss, FailedPrecondition, MilepostError, NotFound, Unavailable
from milepost.core.tls import open_channel
from milepost.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from scoring_core.explain import Explanation
    from scoring_core.model import CompiledModel

ALIVE = ("ALIVE", "DRAINING")


def _agents(client: Client) -> dict[str, str]:
    """Live agents: id -> address."""
    return {a.info.agent_id: a.info.address for a in client.status().agents if a.state in ALIVE}


def _ask(client: Client, address: str, request: agent_pb2.ListDecisionsRequest) -> list[pa.Table]:
    from agent.decision_files import from_ipc

    with auth.with_token(open_channel(address, client.tls, [("grpc.max_receive_message_length", -1)]),
                         client.token) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        try:
            return [from_ipc(m.arrow_ipc) for m in stub.ListDecisions(request, timeout=client.timeout)]
        except grpc.RpcError as err:
            raise MilepostError.from_status(err, f"agent {address}") from err


def list_decisions(client: Client, endpoint: str, since: float = 0.0, until: float = 0.0, limit: int = 0) -> pa.Table:
    """The endpoint's decisions in [since, until) from every live agent, oldest first, at most ``limit``
    (0: each agent's default). Agents that cannot be reached are skipped: Unavailable if none answered."""
    request = agent_pb2.ListDecisionsRequest(endpoint=endpoint, since=since, until=until, limit=limit)
    tables: list[pa.Table] = []
    agents = _agents(client)
    failures = []
    for agent_id, address in sorted(agents.items()):
        try:
            tables.extend(_ask(client, address, request))
        except Unavailable as err:
            failures.append(f"{agent_id}: {err.message}")
    if agents and len(failures) == len(agents):
        raise Unavailable(f"no agent answered: {'; '.join(failures)}")
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="permissive").sort_by([("time", "ascending"), ("row", "ascending")])
    if limit:
        ids = pc.unique(table["decision_id"])[:limit]
        table = table.filter(pc.is_in(table["decision_id"], ids))
    return table


def get_decision(client: Client, decision_id: str) -> pa.Table:
    """The rows of one decision, from the agent its id names."""
    from agent.decision_log import parse_id

    agent_id, _ = parse_id(decision_id)
    address = _agents(client).get(agent_id)
    if address is None:
        raise NotFound(f"decision {decision_id!r} is held by agent {agent_id!r}, which is not live now; start it "
                       "again (its decision log is under its data directory) and retry")
    tables = _ask(client, address, agent_pb2.ListDecisionsRequest(decision_id=decision_id))
    return pa.concat_tables(tables).sort_by("row")


@dataclass
class Replay:
    decision_id: str
    model: str
    digest: str
    rows: int
    identical: bool
    differences: list[str] = field(default_factory=list)


def logged_model(client: Client, logged: pa.Table) -> tuple[str, str, CompiledModel]:
    """(name, digest, the model) of the version that answered a logged decision: its bundle
    fetched from the registry and checked against the digest the decision logged."""
    import scoring_core

    decision_id = logged["decision_id"][0].as_py()
    model, digest = _one(logged, "model"), _one(logged, "model_digest")
    if not model or not digest.startswith("sha256:") or "," in digest:
        raise FailedPrecondition(
            f"decision {decision_id!r} was answered by {model or 'an unknown model'!r} ({digest or 'no digest'}): "
            "replay and explain take decisions of one model version (not ensembles)")
    with tempfile.TemporaryDirectory() as tmp:
        got = client.fetch_model(model, digest, Path(tmp) / "bundle")
        if f"sha256:{got}" != digest:
            raise DataLoss(f"model {model} arrived with content hash sha256:{got}, the decision logged {digest}")
        return model, digest, scoring_core.load(Path(tmp) / "bundle", version=got)


def replay(client: Client, decision_id: str) -> Replay:
    """Re-score a logged decision with its logged model version on CPU, comparing outputs bit for bit."""
    logged = get_decision(client, decision_id)
    model, digest, compiled = logged_model(client, logged)
    again = compiled.predict_arrow(_batch(logged.column("inputs")))
    differences = compare(_batch(logged.column("outputs")), again)
    return Replay(decision_id, model, digest, logged.num_rows, not differences, differences)


def explain(client: Client, decision_id: str, *, top: int = 5) -> list[Explanation]:
    """Each row of a logged decision explained by its logged model version (scoring_core.explain:
    contributions that sum to the margin, the features that moved it most, a summary)."""
    from scoring_core.explain import explain_rows

    logged = get_decision(client, decision_id)
    _, _, compiled = logged_model(client, logged)
    inputs = _batch(logged.column("inputs"))
    if inputs.num_columns == 1 and pa.types.is_fixed_size_list(inputs.schema.field(0).type):
        column = inputs.column(0)  # one [n, k] tensor: the matrix itself
        data: Any = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    else:
        data = inputs
    return explain_rows(compiled, data, top=top)[1]


def compare(served: pa.RecordBatch, again: pa.RecordBatch) -> list[str]:
    """What differs between two answers, bit for bit (NaN payloads and the sign of zero count); empty: identical."""
    found = []
    if served.schema != again.schema:
        found.append(f"schema: logged {served.schema} vs replayed {again.schema}")
        return found
    for name in served.schema.names:
        a, b = _bits(served.column(name)), _bits(again.column(name))
        if a.tobytes() == b.tobytes():
            continue
        values_a, values_b = served.column(name).to_pylist(), again.column(name).to_pylist()
        rows = [i for i, (x, y) in enumerate(zip(values_a, values_b)) if repr(x) != repr(y)] or list(range(len(values_a)))
        for i in rows[:10]:
            found.append(f"{name}[{i}]: logged {values_a[i]!r}, replayed {values_b[i]!r}")
        if not rows:
            found.append(f"{name}: bytes differ")
    return found


def _bits(column: pa.Array) -> np.ndarray:
    """The column's values as bytes: primitive values through any fixed-size lists, or their text."""
    values = column
    while pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    if pa.types.is_primitive(values.type) and not pa.types.is_boolean(values.type) and values.null_count == 0:
        return np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).view(np.uint8)
    return np.frombuffer(repr(values.to_pylist()).encode(), np.uint8)


def _batch(column: pa.ChunkedArray) -> pa.RecordBatch:
    struct = column.combine_chunks()
    return pa.RecordBatch.from_struct_array(struct)


def _one(table: pa.Table, name: str) -> str:
    values = set(table.column(name).to_pylist())
    return values.pop() if len(values) == 1 else ""


def rows_as_json(table: pa.Table) -> Iterable[dict[str, Any]]:
    """Each row as a JSON-able object: time in ISO 8601, floats as Python prints them (exact round
    trip), a missing or non-finite value as null (strict JSON has no NaN or Infinity)."""
    for row in table.to_pylist():
        row["time"] = row["time"].isoformat() if row.get("time") is not None else None
        yield {name: _strict(value) for name, value in row.items()}


def _strict(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_strict(v) for v in value]
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    return value
