"""The `teleread` command: the composition root. It parses arguments, builds settings,
engines and stores once, and hands them to the packages; it holds no business logic."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from teleread.embedded import DataDir, database_url

log = logging.getLogger("teleread")


def _add_db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="embedded data directory (env TELEREAD_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL (env TELEREAD_WORKLIST_DATABASE_URL)")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teleread", description="Remote imaging consultation: gateway, worklist, reports."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the whole pipeline on one machine")
    _add_db_args(serve)
    serve.add_argument("--host", default=os.environ.get("TELEREAD_HOST", "127.0.0.1"))
    serve.add_argument("--dicom-port", type=int, default=_env_int("TELEREAD_GATEWAY_PORT", 11112))
    serve.add_argument("--http-port", type=int, default=_env_int("TELEREAD_API_PORT", 8000))
    serve.add_argument("--ae-title", default=os.environ.get("TELEREAD_GATEWAY_AE_TITLE"))

    gw = sub.add_parser("gateway", help="run the township gateway alone, or show its status")
    gw.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    gw.add_argument("--spool-dir", help="spool directory (env TELEREAD_GATEWAY_SPOOL_DIR)")
    gw.add_argument("--json", action="store_true", help="status as JSON")

    api = sub.add_parser("api", help="run the county API alone")
    _add_db_args(api)
    api.add_argument("--host", default=os.environ.get("TELEREAD_API_HOST", "127.0.0.1"))
    api.add_argument("--http-port", type=int, default=_env_int("TELEREAD_API_PORT", 8000))

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("db_command", choices=["upgrade"], help="upgrade: apply migrations")
    _add_db_args(db)

    sites = sub.add_parser("sites", help="manage township sites")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True)
    sadd = sites_sub.add_parser("add", help="add a site with its modalities' AE titles")
    sadd.add_argument("code")
    sadd.add_argument("--name", required=True)
    sadd.add_argument("--ae", action="append", default=[], help="calling AE title (repeat)")
    _add_db_args(sadd)
    sae = sites_sub.add_parser("add-ae", help="allow more calling AE titles for a site")
    sae.add_argument("code")
    sae.add_argument("--ae", action="append", required=True)
    _add_db_args(sae)
    slist = sites_sub.add_parser("list", help="list sites")
    _add_db_args(slist)

    users = sub.add_parser("users", help="manage accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    uadd = users_sub.add_parser("add", help="add an account; the password comes on stdin")
    uadd.add_argument("username")
    uadd.add_argument(
        "--role", required=True, choices=["radiologist", "clinic", "admin", "gateway"]
    )
    uadd.add_argument("--site", help="site code (clinic and township gateway accounts)")
    uadd.add_argument("--display-name", default="")
    uadd.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    _add_db_args(uadd)

    send = sub.add_parser("send", help="send DICOM files to a DICOM node (C-STORE)")
    send.add_argument("paths", nargs="+", type=Path)
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=11112)
    send.add_argument("--aet", default="TELEREAD", help="called AE title")
    send.add_argument("--calling-aet", default="TELEREAD_SCU")

    demo = sub.add_parser("demo-studies", help="write synthetic CT and DR demo studies")
    demo.add_argument("outdir", type=Path)
    demo.add_argument("--seed", type=int, default=0)

    triage = sub.add_parser("triage", help="triage DICOM files: one JSON object per file")
    triage.add_argument("paths", nargs="+", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("alembic", "httpx", "pynetdicom"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _cmd_serve(args: argparse.Namespace) -> int:
    from teleread.allinone import serve

    return serve(args)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from teleread.services import gateway_command

    return gateway_command(args)


def _cmd_api(args: argparse.Namespace) -> int:
    from teleread.services import api_command

    return api_command(args)


def _session_factory(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from worklist.db import make_engine, make_sessionmaker, upgrade

    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    url = database_url(data_dir, args.database_url)
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def _cmd_db(args: argparse.Namespace) -> int:
    from worklist.db import upgrade

    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    upgrade(database_url(data_dir, args.database_url))
    print("database is at the latest migration")
    return 0


def _cmd_sites(args: argparse.Namespace) -> int:
    from worklist import accounts
    from worklist.db import utcnow
    from worklist.errors import WorklistError

    factory = _session_factory(args)
    try:
        with factory.begin() as session:
            if args.sites_command == "add":
                site = accounts.create_site(
                    session=session, code=args.code, name=args.name, ae_titles=args.ae, now=utcnow()
                )
            elif args.sites_command == "add-ae":
                site = accounts.add_site_ae_titles(
                    session=session, code=args.code, ae_titles=args.ae, now=utcnow()
                )
            else:
                for s in accounts.list_sites(session=session):
                    aes = " ".join(a.ae_title for a in s.ae_titles)
                    print(f"{s.code}\t{s.name}\t{aes}")
                return 0
            aes = ", ".join(a.ae_title for a in site.ae_titles) or "none"
            print(f"site {site.code} ({site.name}); calling AE titles: {aes}")
    except WorklistError as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_users(args: argparse.Namespace) -> int:
    from worklist import accounts
    from worklist.db import utcnow
    from worklist.errors import WorklistError

    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("teleread: the password (on stdin) must have at least 8 characters", file=sys.stderr)
        return 2
    factory = _session_factory(args)
    try:
        with factory.begin() as session:
            user = accounts.create_user(
                session=session,
                username=args.username,
                password=password,
                role=args.role,
                site_code=args.site,
                display_name=args.display_name,
                now=utcnow(),
            )
            print(f"user {user.username} ({user.role}{', site ' + args.site if args.site else ''})")
    except WorklistError as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    from teleread.send import format_progress, send_paths

    def progress(done: int, total: int, nbytes: int) -> None:
        sys.stderr.write("\r" + format_progress(done, total, nbytes))
        sys.stderr.flush()

    result = send_paths(
        args.paths,
        host=args.host,
        port=args.port,
        called_aet=args.aet,
        calling_aet=args.calling_aet,
        progress=progress,
    )
    sys.stderr.write("\n")
    print(result.summary())
    return 0 if result.failed == 0 and result.sent > 0 else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from teleread.demo import write_demo_studies

    for study in write_demo_studies(args.outdir, seed=args.seed):
        print(
            f"{study.modality}\t{study.expected_category or 'routine'}\t"
            f"{len(study.files)} files\t{study.description}\t{study.directory}"
        )
    return 0


def _cmd_triage(args: argparse.Namespace) -> int:
    from worklist.triage.api import read_paths

    for row in read_paths(args.paths):
        print(json.dumps(row, ensure_ascii=False))
    return 0


COMMANDS = {
    "serve": _cmd_serve,
    "gateway": _cmd_gateway,
    "api": _cmd_api,
    "db": _cmd_db,
    "sites": _cmd_sites,
    "users": _cmd_users,
    "send": _cmd_send,
    "demo-studies": _cmd_demo,
    "triage": _cmd_triage,
}


if __name__ == "__main__":
    raise SystemExit(main())
