"""The `milepost` command line.

One module per group of commands, each registering its own subcommands: servers
(`up`, `coordinator`, `agent`), models (registry, deploy, endpoints, score), routing
(policies and what they measured), pipelines; `score-dataset` is milepost.dataset_command.
The process's settings (milepost.core.settings) are read first, from the environment and
the ``--config`` file, and give the flags their defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from milepost.core import logs
from milepost.core.errors import MilepostError
from milepost.core.settings import Settings, env_var, load_settings, reset_settings

SERVER_COMMANDS = ("up", "coordinator", "agent")


def common_arguments(settings: Settings) -> argparse.ArgumentParser:
    """The flags every client command takes: where the coordinator is, who we are, how long to wait."""
    config_help = f"TOML file of settings (default: ${env_var('config')}); see the README's Settings"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--coordinator", default=settings.coordinator, metavar="HOST:PORT",
                        help=f"coordinator address (default: %(default)s, or ${env_var('coordinator')})")
    common.add_argument("--timeout", type=float, default=settings.call_timeout_s, help="deadline per call in seconds")
    common.add_argument("--tls-cert", default=settings.tls_cert, metavar="PEM", help="certificate of this process (TLS)")
    common.add_argument("--tls-key", default=settings.tls_key, metavar="PEM", help="private key of --tls-cert")
    common.add_argument("--tls-ca", default=settings.tls_ca, metavar="PEM",
                        help="CA of the peers: mutual TLS (see `milepost certs init`)")
    common.add_argument("--token", default=settings.token, metavar="TOKEN",
                        help=f"bearer token (default: ${env_var('token')}, else the admin.token of `milepost up`)")
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE", help=config_help)
    common.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    common.add_argument("--debug", action="store_true", help="on an error, show its traceback too")
    common.add_argument("--log-format", choices=logs.FORMATS, default=settings.log_format,
                        help="text, or json: one object a line (default: %(default)s)")
    common.add_argument("--log-level", choices=logs.LEVELS, default=settings.log_level or None,
                        help="default: info for servers, warning for other commands")
    return common


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    from milepost import __version__, dataset_command
    from milepost.cli import audit, certs, decisions, explain, fairness, health, models, pipelines, routing, servers, tokens

    config_help = f"TOML file of settings (default: ${env_var('config')}); see the README's Settings"
    common = common_arguments(settings)

    parser = argparse.ArgumentParser(prog="milepost", description="Deploy, route, score and watch ML models.")
    parser.add_argument("--version", action="version", version=f"milepost {__version__}")
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE", help=config_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    servers.add_commands(sub, common, settings)
    models.add_commands(sub, common)
    dataset_command.add_parser(sub, common, settings)
    routing.add_commands(sub, common)
    pipelines.add_commands(sub, common)
    tokens.add_commands(sub, common)
    certs.add_commands(sub, common)
    audit.add_commands(sub, common)
    decisions.add_commands(sub, common)
    explain.add_commands(sub, common)
    health.add_commands(sub, common)
    fairness.add_commands(sub, common)
    return parser


def config_file(argv: list[str]) -> str | None:
    """The ``--config FILE`` among the arguments, wherever it stands, before the rest is parsed."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    return known.config


# What a shell reports for a command that SIGPIPE ended (128 + 13), as `yes | head -1` leaves it.
BROKEN_PIPE = 141
INTERRUPTED = 130  # 128 + SIGINT


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error is one line on stderr (``--debug``: with its traceback).

    Output cut short by its reader (``milepost status | head -3``) ends the command quietly
    with BROKEN_PIPE, as a Unix tool that SIGPIPE stopped: the reader has what it wanted, and a
    pipeline under ``set -o pipefail`` still learns that the output was not read whole."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    args: argparse.Namespace | None = None
    try:
        args = build_parser(load_settings(config_file(argv))).parse_args(argv)
        default = "info" if args.verbose or args.command in SERVER_COMMANDS else "warning"
        logs.configure(getattr(args, "log_level", None) or default, getattr(args, "log_format", "text"))
        status = int(args.func(args))
        sys.stdout.flush()  # here, so that a reader gone shows as BrokenPipeError below, not at exit
        return status
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE
    except MilepostError as err:
        from milepost.cli.hints import with_hint

        return _failed(f"{err.code.name}: {with_hint(err, args)}", debug)
    except OSError as err:  # a file named on the command line
        return _failed(f"{type(err).__name__}: {err}", debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, and how to see more
        return _failed(f"INTERNAL: {type(err).__name__}: {err} (a bug in milepost; --debug shows where)", debug)
    finally:
        reset_settings()


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for the reader that left is not
    written at exit (Python would then report the broken pipe itself)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file of this process (a test's capture)
        pass
    finally:
        os.close(devnull)


def _failed(line: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"error: {line}", file=sys.stderr)
    return 1
