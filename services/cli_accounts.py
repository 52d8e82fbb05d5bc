"""`lading user|robot|grant|group|auth` subcommands: manage accounts over AccountService (gRPC).

They talk to the metadata service found as services/cli_targets.py says (`--metadata`,
`--data-dir`, LADING_GATEWAY__METADATA_TARGET, else the `lading serve` of the data folder), with the
gateway's client TLS settings (services/cli_channels.py).
`lading auth keygen` needs no service.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.cli_targets import add_target_flags

COMMANDS = ("user", "robot", "grant", "group", "auth")
_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_commands(commands: Any) -> None:
    """Adds the subcommands to `lading`'s subparsers."""

    def with_target(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_target_flags(parser, ("metadata",))

    user = commands.add_parser("user", help="manage user accounts").add_subparsers(dest="action", required=True)
    add = with_target(user.add_parser("add", help="create a user (asks for the password)"))
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may do everything")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--description", default="")
    passwd = with_target(user.add_parser("passwd", help="set a user's password"))
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    with_target(user.add_parser("delete", help="delete a user and its grants")).add_argument("name")
    with_target(user.add_parser("list", help="list users and robots"))
    with_target(user.add_parser(
        "revoke-tokens", help="make every token issued to an account so far stop working (users and robots)"
    )).add_argument("name")
    with_target(user.add_parser(
        "disable", help="refuse an account's logins and tokens until enabled (its tokens never come back)"
    )).add_argument("name")
    with_target(user.add_parser("enable", help="let a disabled account log in again")).add_argument("name")

    robot = commands.add_parser("robot", help="manage robot accounts (CI)").add_subparsers(
        dest="action", required=True)
    create = with_target(robot.add_parser("create", help="create robot$NAME and print its secret once"))
    create.add_argument("name")
    create.add_argument("--expires", default=None,
                        help="lifetime (30d, 12h, 90m, 2w) or an ISO date/time (UTC); default: never")
    create.add_argument("--description", default="")
    with_target(robot.add_parser("delete", help="delete a robot")).add_argument("name")
    with_target(robot.add_parser("list", help="list robots"))
    with_target(robot.add_parser(
        "rotate", help="give robot$NAME a new secret, printed once; the old secret and its tokens stop working"
    )).add_argument("name")
    with_target(robot.add_parser("disable", help="refuse a robot's logins and tokens until enabled")
                ).add_argument("name")
    with_target(robot.add_parser("enable", help="let a disabled robot log in again")).add_argument("name")

    grant = commands.add_parser("grant", help="manage permissions").add_subparsers(dest="action", required=True)
    grant_add = with_target(grant.add_parser("add", help="grant ACTIONS (pull,push,delete) on PATTERN"))
    grant_add.add_argument("account")
    grant_add.add_argument("pattern", help="repository name pattern: team-a/*, *, exact/name")
    grant_add.add_argument("actions", help="comma-separated: pull,push,delete")
    grant_list = with_target(grant.add_parser("list", help="list grants"))
    grant_list.add_argument("account", nargs="?", default="")
    revoke = with_target(grant.add_parser("revoke", help="revoke ACTIONS (default: all) on PATTERN"))
    revoke.add_argument("account")
    revoke.add_argument("pattern")
    revoke.add_argument("actions", nargs="?", default="")

    group = commands.add_parser(
        "group", help="map LDAP / OIDC groups to grants or admin").add_subparsers(dest="action", required=True)
    group_map = with_target(group.add_parser(
        "map", help="give a group's members ACTIONS on PATTERN (or, with --admin, admin rights)"))
    group_map.add_argument("provider", choices=("ldap", "oidc"))
    group_map.add_argument("group", help="LDAP: the group's DN; OIDC: a value of the groups claim")
    group_map.add_argument("pattern", nargs="?", default="", help="repositories, e.g. 'team-a/*'")
    group_map.add_argument("actions", nargs="?", default="", help="pull,push,delete")
    group_map.add_argument("--admin", action="store_true", help="the group's members are admins")
    group_unmap = with_target(group.add_parser(
        "unmap", help="remove a group's ACTIONS (default: all) on PATTERN, or its --admin mapping"))
    group_unmap.add_argument("provider", choices=("ldap", "oidc"))
    group_unmap.add_argument("group")
    group_unmap.add_argument("pattern", nargs="?", default="")
    group_unmap.add_argument("actions", nargs="?", default="")
    group_unmap.add_argument("--admin", action="store_true")
    with_target(group.add_parser("list", help="list group mappings")).add_argument(
        "provider", nargs="?", default="", choices=("", "ldap", "oidc"))

    auth = commands.add_parser("auth", help="token signing keys").add_subparsers(dest="action", required=True)
    keygen = auth.add_parser("keygen", help="write a new ES256 (P-256) signing key in PEM")
    keygen.add_argument("--out", required=True, type=Path)


def parse_expiry(text: str, now: datetime) -> datetime:
    match = _DURATION.fullmatch(text)
    if match:
        return now + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("the passwords differ")
    return first


def _keygen(out: Path) -> int:
    from gateway.auth.keys import generate_signing_key_pem, libtrust_kid, load_signing_key
    from services.common.private_files import make_private_folder, write_private_file

    if out.exists():
        print(f"lading auth keygen: {out} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    make_private_folder(out.parent, tighten=False)  # folders it makes are durable too
    try:  # whole and durable, or not there at all (a power cut must not leave half a key)
        write_private_file(out, generate_signing_key_pem(), replace=False)
    except FileExistsError:
        print(f"lading auth keygen: {out} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    key = load_signing_key(out)
    print(f"wrote {out} (ES256, kid {libtrust_kid(key.private_key.public_key())})")
    return 0


def _account_name(command: str, name: str) -> str:
    """`lading robot ... NAME` takes the robot's name with or without its `robot$` prefix."""
    return "robot$" + name.removeprefix("robot$") if command == "robot" else name


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else "never"


async def _call(args: argparse.Namespace) -> int:
    from lading.metadata.v1 import accounts_pb2 as pb
    from lading.metadata.v1 import accounts_pb2_grpc

    from services.cli_channels import with_planes
    from services.cli_targets import resolve
    from services.common.settings import load_settings

    settings = load_settings()
    targets = resolve(args, settings, ("metadata",))
    return await with_planes(f"{args.command} {args.action}", targets, settings, lambda channels: _dispatch(
        args, accounts_pb2_grpc.AccountServiceStub(channels["metadata"]), pb))


async def _dispatch(args: argparse.Namespace, stub: Any, pb: Any) -> int:
    timeout = 30.0
    command, action = args.command, args.action
    if command == "user" and action == "add":
        password = _password(args.password_stdin)
        reply = await stub.CreateUser(pb.CreateUserRequest(
            name=args.name, password=password, is_admin=args.admin, description=args.description), timeout=timeout)
        print(f"created user {reply.account.name}" + (" (admin)" if reply.account.is_admin else ""))
    elif command == "user" and action == "passwd":
        await stub.SetPassword(pb.SetPasswordRequest(name=args.name, password=_password(args.password_stdin)),
                               timeout=timeout)
        print(f"password of {args.name} changed")
    elif action == "delete":
        name = _account_name(command, args.name)
        await stub.DeleteAccount(pb.DeleteAccountRequest(name=name), timeout=timeout)
        print(f"deleted {name}")
    elif action == "revoke-tokens":
        reply = await stub.RevokeTokens(pb.RevokeTokensRequest(name=args.name), timeout=timeout)
        print(f"revoked every token of {reply.account.name} issued so far")
    elif action in ("disable", "enable"):
        name = _account_name(command, args.name)
        await stub.SetAccountDisabled(pb.SetAccountDisabledRequest(name=name, disabled=action == "disable"),
                                      timeout=timeout)
        print(f"{action}d {name}")
    elif command == "robot" and action == "rotate":
        reply = await stub.RotateRobotSecret(pb.RotateRobotSecretRequest(name=args.name), timeout=timeout)
        print(f"name: {reply.account.name}")
        print(f"secret: {reply.secret}")
        print(f"expires: {_when(reply.account.expires_at)}")
        print("The new secret is shown only now; the old one and every token issued with it no longer work.",
              file=sys.stderr)
    elif action == "list" and command in ("user", "robot"):
        reply = await stub.ListAccounts(pb.ListAccountsRequest(), timeout=timeout)
        for account in reply.accounts:
            robot = account.kind == pb.ACCOUNT_KIND_ROBOT
            if command == "robot" and not robot:
                continue
            flags = "admin" if account.is_admin else ("robot" if robot else "user")
            if account.disabled:
                flags += ",disabled"
            # origin: local, ldap (a directory account) or oidc (single sign-on).
            print(f"{account.name}\t{flags}\torigin={account.origin or 'local'}\texpires={_when(account.expires_at)}"
                  f"\t{account.description}")
    elif command == "robot" and action == "create":
        expires = parse_expiry(args.expires, datetime.now(UTC)) if args.expires else None
        reply = await stub.CreateRobot(pb.CreateRobotRequest(
            name=args.name, description=args.description,
            expires_at=int(expires.timestamp()) if expires else 0), timeout=timeout)
        print(f"name: {reply.account.name}")
        print(f"secret: {reply.secret}")
        print(f"expires: {_when(reply.account.expires_at)}")
        print("The secret is shown only now; store it in your CI's secret store.", file=sys.stderr)
    elif command == "grant" and action == "add":
        reply = await stub.Grant(pb.GrantRequest(
            account=args.account, pattern=args.pattern, actions=args.actions.split(",")), timeout=timeout)
        print(f"{reply.permission.account}\t{reply.permission.pattern}\t{','.join(reply.permission.actions)}")
    elif command == "grant" and action == "list":
        reply = await stub.ListGrants(pb.ListGrantsRequest(account=args.account), timeout=timeout)
        for permission in reply.permissions:
            print(f"{permission.account}\t{permission.pattern}\t{','.join(permission.actions)}")
    elif command == "grant" and action == "revoke":
        actions = [a for a in args.actions.split(",") if a]
        reply = await stub.Revoke(pb.RevokeRequest(account=args.account, pattern=args.pattern, actions=actions),
                                  timeout=timeout)
        print("revoked" if reply.revoked else "nothing was granted on that pattern")
    elif command == "group" and action in ("map", "unmap"):
        mapping = pb.GroupMapping(provider=args.provider, group=args.group, pattern=args.pattern,
                                  actions=[a for a in args.actions.split(",") if a], admin=args.admin)
        if action == "map":
            reply = await stub.MapGroup(pb.MapGroupRequest(mapping=mapping), timeout=timeout)
            print(_mapping_line(reply.mapping))
        else:
            reply = await stub.UnmapGroup(pb.UnmapGroupRequest(mapping=mapping), timeout=timeout)
            print("removed" if reply.removed else "nothing was mapped there")
    elif command == "group" and action == "list":
        reply = await stub.ListGroupMappings(pb.ListGroupMappingsRequest(provider=args.provider), timeout=timeout)
        for mapping in reply.mappings:
            print(_mapping_line(mapping))
    else:  # pragma: no cover - argparse only admits the above
        raise SystemExit(f"unknown command {command} {action}")
    return 0


def _mapping_line(mapping: Any) -> str:
    gives = "admin" if mapping.admin else f"{mapping.pattern}\t{','.join(mapping.actions)}"
    return f"{mapping.provider}\t{mapping.group}\t{gives}"


def run(args: argparse.Namespace) -> int:
    """Runs one account command; returns the exit code."""
    if args.command == "auth":
        return _keygen(args.out)
    import asyncio  # here, not at the top: `lading serve` builds this parser and never runs asyncio

    return asyncio.run(_call(args))
