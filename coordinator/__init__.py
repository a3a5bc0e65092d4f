"""The control plane: registry, endpoints, agents and placement, kept in SQLite."""
