"""The `cfs` command: one subcommand per module of cli/, dispatched here. Nothing else."""

from __future__ import annotations

import argparse
import sys

from cfs_cluster.cli.cluster import add_cluster_parser, cluster_command
from cfs_cluster.cli.connect import CliError, add_connection_arguments
from cfs_cluster.cli.devcluster import dev_cluster, dev_cluster_parser
from cfs_cluster.cli.domain import DOMAIN_COMMANDS, add_domain_parsers, domain_command
from cfs_cluster.cli.identity import add_identity_parsers, identity_command
from cfs_cluster.cli.serve import serve, serve_parser
from cfs_cluster.cli.users import add_users_parser, users_command
from cfs_cluster.errors import BadRequest
from cfs_cluster.settings import env, env_int

__all__ = ["main"]


def _backup_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs backup` and `cfs restore` (backup.py; docs/operations.md, disaster recovery)."""
    from cfs_cluster.cli.backup import add_backup_arguments

    backup = sub.add_parser("backup", help="download a backup of the replicated state (admins)")
    add_connection_arguments(backup)  # the one set of connection options (cliconnect.py)
    restore = sub.add_parser(
        "restore", help="seed an EMPTY data directory from a backup (offline, node stopped)"
    )
    add_backup_arguments(backup, restore)


def _facet_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs facet`: an adapter's ClientFailover configuration API on its own (facet/app.py)."""
    p = sub.add_parser(
        "facet", help="serve the adapter-side ClientFailover configuration API and FailoverState"
    )
    p.add_argument("--host", default=env("CFS_FACET_HOST", "127.0.0.1"), help="[CFS_FACET_HOST]")
    p.add_argument(
        "--port",
        type=int,
        default=env_int("CFS_FACET_PORT", 5590),
        help="[CFS_FACET_PORT]",
    )
    p.add_argument(
        "--data-dir",
        default=env("CFS_FACET_DATA_DIR", "./facet-data"),
        help="where System_ClientFailover.json is kept [CFS_FACET_DATA_DIR]",
    )
    p.add_argument(
        "--log-level", default=env("CFS_LOG_LEVEL", "information"), help="[CFS_LOG_LEVEL]"
    )


def _simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cfs simulate`: emulated adapters measuring data continuity (cfs_cluster.simulator)."""
    from cfs_cluster.cli.simulate import add_simulate_arguments

    p = sub.add_parser("simulate", help="emulated adapters measuring gaps and duplicates")
    add_simulate_arguments(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cfs", description="Highly available Client Failover Service"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser(sub)
    dev_cluster_parser(sub)
    add_users_parser(sub)
    add_identity_parsers(sub)  # `cfs clients`, `cfs identity`
    add_cluster_parser(sub)
    add_domain_parsers(sub)  # `cfs groups|sessions|override|events|watch`
    _backup_parsers(sub)
    _facet_parser(sub)
    _simulate_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "users":
            return users_command(args)
        if args.command in ("clients", "identity"):
            return identity_command(args)
        if args.command == "cluster":
            return cluster_command(args)
        if args.command in DOMAIN_COMMANDS:
            return domain_command(args)
        if args.command in ("backup", "restore"):
            from cfs_cluster.cli.backup import backup_command, restore_command

            return (backup_command if args.command == "backup" else restore_command)(args)
        if args.command == "facet":
            from cfs_cluster.facet.app import facet_command

            return facet_command(args)
        if args.command == "simulate":
            from cfs_cluster.cli.simulate import simulate_command

            return simulate_command(args)
        if args.command == "serve":
            return serve(args)
        return dev_cluster(args)
    except BadRequest as exc:
        print(f"cfs: {exc.reason}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"cfs {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C ends `watch`, `events --follow`, `simulate`: no traceback
        print(file=sys.stderr)
        return 130
