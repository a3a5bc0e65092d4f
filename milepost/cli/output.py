"""`--output table|json`: a command that prints data prints it for a person (tables,
summaries) or for a program (the RPC's answer as JSON, field names as in the .proto).

A command takes the flag with ``add_flag`` and prints through ``show``; in JSON a list of
messages is a JSON array, one message an object."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.message import Message

FORMATS = ("table", "json")


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=FORMATS, default="table",
                        help="table (default), or json: the coordinator's answer as JSON")


def show(args: argparse.Namespace, data: Message | Sequence[Message], table: Callable[[], None]) -> None:
    """Print ``data`` as JSON when asked, else run ``table`` (which prints it for a person)."""
    if getattr(args, "output", "table") == "json":
        print(json.dumps(to_json(data), indent=2, sort_keys=True))
    else:
        table()


def to_json(data: Message | Sequence[Message]) -> Any:
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import Message

    if isinstance(data, Message):
        return MessageToDict(data, preserving_proto_field_name=True)
    return [MessageToDict(m, preserving_proto_field_name=True) for m in data]
