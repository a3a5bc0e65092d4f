"""`--output table|json`: a command that prints data prints it for a person (tables,
summaries) or for a program (the RPC's answer as JSON, field names as in the .proto).

A command takes the flag with ``add_flag`` and prints through ``show``; in JSON a list of
messages is a JSON array, one message an object, and what a command found itself (a
validation report, what was undeployed) a JSON object of its own. A command that can also
write its data to a file (`score`) takes ``--output table|json|FILE``: a file always has a
suffix that says its format, so neither word is ever a file's name."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.message import Message

FORMATS = ("table", "json")
HELP = "table (default), or json: the coordinator's answer as JSON"


def add_flag(parser: argparse.ArgumentParser, *, help: str = HELP, files: Sequence[str] = ()) -> None:
    """``--output``; ``files``: the suffixes of the files the command can write its data to instead."""
    if files:
        parser.add_argument("--output", type=format_or_file(files), default="table", metavar="table|json|FILE",
                            help=f"{help}; or a {', '.join(files)} file to write")
    else:
        parser.add_argument("--output", choices=FORMATS, default="table", help=help)


def format_or_file(suffixes: Sequence[str]) -> Callable[[str], str]:
    """The type of ``--output table|json|FILE``: a format, or a file with one of ``suffixes``."""

    def parse(text: str) -> str:
        if text in FORMATS or Path(text).suffix.lower() in suffixes:
            return text
        raise argparse.ArgumentTypeError(f"{text!r}: expected table, json, or a file ending {', '.join(suffixes)}")

    return parse


def to_file(args: argparse.Namespace) -> Path | None:
    """The file ``--output FILE`` names; None when it names a format."""
    value = getattr(args, "output", "table")
    return None if value in FORMATS else Path(value)


def show(args: argparse.Namespace, data: Message | Sequence[Any] | Mapping[str, Any],
         table: Callable[[], None]) -> None:
    """Print ``data`` as JSON when asked, else run ``table`` (which prints it for a person)."""
    if getattr(args, "output", "table") == "json":
        print(json.dumps(to_json(data), indent=2, sort_keys=True, default=_plain))
    else:
        table()


def to_json(data: Any) -> Any:
    """Messages as proto JSON (the .proto's field names), inside lists and dicts too; the rest as it is."""
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import Message

    if isinstance(data, Message):
        return MessageToDict(data, preserving_proto_field_name=True)
    if isinstance(data, Mapping):
        return {key: to_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_json(value) for value in data]
    return data


def _plain(value: Any) -> Any:
    """What JSON has no type for: bytes (a BYTES output) as text, anything else as its str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
