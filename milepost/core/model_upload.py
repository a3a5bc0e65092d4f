"""How a bundle archive travels to the coordinator's PushModel: a header, then 1 MiB chunks.

The Python client (users) and the agent (training stages registering what they
trained) upload the same way; the coordinator checks the sha256 of what
arrives against the header before it stores anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from milepost.v1 import coordinator_pb2 as pb

CHUNK_BYTES = 1 << 20


def push_requests(name: str, archive: bytes) -> Iterator[pb.PushModelRequest]:
    """The PushModel request stream for ``archive`` registered as model ``name``."""
    header = pb.PushModelRequest.Header(name=name, format="bundle", sha256=hashlib.sha256(archive).hexdigest())
    yield pb.PushModelRequest(header=header, data=archive[:CHUNK_BYTES])
    for start in range(CHUNK_BYTES, len(archive), CHUNK_BYTES):
        yield pb.PushModelRequest(data=archive[start : start + CHUNK_BYTES])
