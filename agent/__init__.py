"""The agent: one process per node, serving the data plane and the coordinator's orders."""
