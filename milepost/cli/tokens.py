"""The identity commands (role admin): `milepost tokens create NAME --role ROLE [--expires 30d]`,
`milepost tokens list`, `milepost tokens revoke ID_OR_NAME`.

A new token is printed once; the coordinator keeps only its hash."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from milepost.cli import output
from milepost.cli.arguments import client, seconds
from milepost.cli.views import when
from milepost.core.auth import ROLES

if TYPE_CHECKING:
    from milepost.v1 import coordinator_pb2

TOKEN_HEADERS = ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"]


def cmd_tokens_create(args: argparse.Namespace) -> int:
    with client(args) as c:
        created = c.create_token(args.name, args.role, seconds(args.expires) if args.expires else 0.0)
    output.show(args, created, lambda: _print_created(created))
    return 0


def _print_created(created: coordinator_pb2.CreateTokenResponse) -> None:
    print(created.token)
    print(f"(token {created.info.token_id} for {created.info.name}, role {created.info.role}; "
          "shown once: store it now)", flush=True)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from milepost.tables import render

    with client(args) as c:
        tokens = c.list_tokens()
    output.show(args, tokens, lambda: print(render(TOKEN_HEADERS, [
        [t.token_id, t.name, t.role, when(t.created_at), when(t.expires_at), when(t.revoked_at)] for t in tokens
    ])))
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    with client(args) as c:
        revoked = c.revoke_token(args.token_ref)
    output.show(args, revoked, lambda: print(f"revoked token {revoked.token_id} ({revoked.name}, role {revoked.role})"))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tokens = sub.add_parser("tokens", help="create, list and revoke bearer tokens (role admin)")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("create", parents=[common], help="make a token and print it once")
    p.add_argument("name", help="who or what the token is for (a person, a CI job, an agent's node)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 12h, 30d (default: never)")
    output.add_flag(p, help="table (default), or json: the token and its info")
    p.set_defaults(func=cmd_tokens_create)
    p = actions.add_parser("list", parents=[common], help="every token: id, name, role, times (never the token)")
    output.add_flag(p)
    p.set_defaults(func=cmd_tokens_list)
    p = actions.add_parser("revoke", parents=[common], help="refuse a token from now on")
    p.add_argument("token_ref", metavar="ID_OR_NAME")  # not dest "token": that is --token, the caller's own
    output.add_flag(p)
    p.set_defaults(func=cmd_tokens_revoke)
