"""The floor: what several packages share, importing none of them.

errors (with the way back from a gRPC status), the gRPC server builder, the
Open Inference Protocol tensor codec, settings, deadlines, the routing spec and
the in-process nouns (arm, arm counters, model description, placement
requirements, batching settings), each one dataclass with ``to_proto`` /
``from_proto``. scoring_core and engines import only ``errors`` and
``deadlines`` from here, which never load protobuf.
"""
