"""What to do next, added to the error line the CLI prints: the one place where the CLI adds a
hint that needs its own flags and settings, which the servers that word the errors do not know.

A message that already says what to do (it names a flag) is left as it is."""

from __future__ import annotations

import argparse

import grpc

from milepost.core.errors import MilepostError
from milepost.core.settings import env_var


def with_hint(err: MilepostError, args: argparse.Namespace | None) -> str:
    """``err``'s message and, where it has one, its hint."""
    hint = _hint(err, args)
    return f"{err.message}; {hint}" if hint else err.message


def _hint(err: MilepostError, args: argparse.Namespace | None) -> str:
    message = err.message
    coordinator = getattr(args, "coordinator", "") or ""
    where = f" at {coordinator}" if coordinator else ""
    if err.code == grpc.StatusCode.UNAVAILABLE and message.startswith("failed to connect"):
        return (f"is the coordinator{where} running (`milepost up`)? --coordinator or ${env_var('coordinator')} "
                "says where it is")
    if err.code == grpc.StatusCode.UNAUTHENTICATED and "--token" not in message:
        return (f"give a valid token with --token or ${env_var('token')} (`milepost tokens create`, "
                "or the admin.token of `milepost up`)")
    return ""
