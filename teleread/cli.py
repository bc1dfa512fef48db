"""The `teleread` command: the composition root. It parses arguments, builds settings,
engines and stores once, and hands them to the packages; it holds no business logic."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    gw.add_argument(
        "action",
        nargs="?",
        choices=["run", "status", "health"],
        default="run",
        help="run; status: the spool; health: does the DICOM port answer (for healthchecks)",
    )
    gw.add_argument("--spool-dir", help="spool directory (env TELEREAD_GATEWAY_SPOOL_DIR)")
    gw.add_argument("--json", action="store_true", help="status as JSON")

    api = sub.add_parser("api", help="run the county API alone")
    _add_db_args(api)
    api.add_argument("--host", default=os.environ.get("TELEREAD_API_HOST", "127.0.0.1"))
    api.add_argument("--http-port", type=int, default=_env_int("TELEREAD_API_PORT", 8000))
    api.add_argument(
        "--migration-wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="the API never migrates: wait this long for `teleread db upgrade`, then give up",
    )

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("db_command", choices=["upgrade"], help="upgrade: apply migrations")
    _add_db_args(db)

    init = sub.add_parser(
        "init", help="create the sites, accounts and gateway credentials a file declares"
    )
    init.add_argument("--file", type=Path, required=True, help="county.yaml (docs/deploy.md)")
    init.add_argument(
        "--out",
        type=Path,
        required=True,
        help="where the S3 identities, township settings and new passwords are written",
    )
    init.add_argument(
        "--new-s3-key",
        action="append",
        default=[],
        metavar="SITE",
        help="give this site's gateway a fresh S3 key (repeat for more sites)",
    )
    _add_db_args(init)

    st = sub.add_parser("storage", help="the county's object store")
    st_sub = st.add_subparsers(dest="storage_command", required=True)
    st_sub.add_parser("setup", help="create the bucket and turn on object versioning")
    mk = st_sub.add_parser(
        "migrate-keys", help="move objects stored without a site prefix under their site's"
    )
    mk.add_argument("--dry-run", action="store_true", help="count them, move nothing")
    mk.add_argument("--limit", type=int, help="move at most this many, then stop")
    _add_db_args(mk)

    sites = sub.add_parser("sites", help="manage township sites")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True)
    sadd = sites_sub.add_parser("add", help="add a site with its modalities' AE titles")
    sadd.add_argument("code")
    sadd.add_argument("--name", required=True)
    sadd.add_argument("--ae", action="append", default=[], help="calling AE title (repeat)")
    _add_device_args(sadd)
    _add_db_args(sadd)
    sae = sites_sub.add_parser("add-ae", help="allow more calling AE titles for a site")
    sae.add_argument("code")
    sae.add_argument("--ae", action="append", required=True)
    _add_db_args(sae)
    sbind = sites_sub.add_parser(
        "bind", help="accept the site's AE titles only from these networks or certificates"
    )
    sbind.add_argument("code")
    _add_device_args(sbind)
    _add_db_args(sbind)
    sunbind = sites_sub.add_parser(
        "unbind", help="forget networks or certificates of a site (none left: any address)"
    )
    sunbind.add_argument("code")
    sunbind.add_argument("--from", dest="networks", action="append", default=[], metavar="CIDR")
    sunbind.add_argument("--cert", dest="certs", action="append", default=[], metavar="FILE|SHA256")
    _add_db_args(sunbind)
    spacs = sites_sub.add_parser(
        "set-pacs", help="where the site's signed reports go as DICOM SR (AE@host:port)"
    )
    spacs.add_argument("code")
    spacs.add_argument("destination", help='AE@host:port, or "" for none')
    _add_db_args(spacs)
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
    uadd.add_argument("--display-name", default="", help="the name reports print (李医生)")
    uadd.add_argument("--title", default="", help="professional title reports print (主治医师)")
    uadd.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    _add_db_args(uadd)
    for action, text in (
        ("disable", "disable an account: no log-in, and its tokens are refused"),
        ("enable", "let a disabled account log in again (its old tokens stay refused)"),
        ("revoke", "refuse an account's tokens; a gateway credential gets a new password"),
    ):
        change = users_sub.add_parser(action, help=text)
        change.add_argument("username")
        _add_db_args(change)

    send = sub.add_parser("send", help="send DICOM files to a DICOM node (C-STORE)")
    send.add_argument("paths", nargs="+", type=Path)
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=11112)
    send.add_argument("--aet", default="TELEREAD", help="called AE title")
    send.add_argument("--calling-aet", default="TELEREAD_SCU")
    send.add_argument("--tls", action="store_true", help="DICOM TLS (docs/tls.md)")
    send.add_argument("--tls-ca", type=Path, help="CA that signed the peer's certificate")
    send.add_argument("--tls-cert", type=Path, help="our client certificate (PEM)")
    send.add_argument("--tls-key", type=Path, help="its private key (PEM)")

    demo = sub.add_parser("demo-studies", help="write synthetic CT and DR demo studies")
    demo.add_argument("outdir", type=Path)
    demo.add_argument("--seed", type=int, default=0)

    triage = sub.add_parser("triage", help="triage DICOM files: one JSON object per file")
    triage.add_argument(
        "--explain",
        action="store_true",
        help="add every matched term with its category, rule, family and source, and why "
        "a match did not count",
    )
    triage.add_argument("paths", nargs="+", type=Path)

    doctor = sub.add_parser("doctor", help="check a configuration end to end, in plain words")
    doctor.add_argument("--role", choices=["county", "gateway", "all"], default="all")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per network step")
    doctor.add_argument(
        "--host",
        help="the address the API listens on, as given to serve/api --host "
        "(default: TELEREAD_HOST for all, TELEREAD_API_HOST for county, else 127.0.0.1)",
    )
    _add_db_args(doctor)

    ohif = sub.add_parser("ohif", help="the OHIF viewer served at /ohif/")
    ohif_sub = ohif.add_subparsers(dest="ohif_command", required=True)
    oinst = ohif_sub.add_parser(
        "install", help="install the pinned @ohif/app build (npm pack, or --tarball)"
    )
    oinst.add_argument("--tarball", type=Path, help="an @ohif/app tarball from `npm pack`")
    oinst.add_argument(
        "--dest", type=Path, help="where (default viewer_api/web/ohif; else TELEREAD_API_OHIF_DIR)"
    )
    oinst.add_argument(
        "--if-missing", action="store_true", help="do nothing when that version is there"
    )

    verify = sub.add_parser(
        "verify", help="read every stored object back and check it against the index (sha256)"
    )
    verify.add_argument("--json", action="store_true", help="machine-readable summary")
    _add_db_args(verify)

    bk = sub.add_parser("backup", help="back up the database to one file (SQLite or PostgreSQL)")
    bk.add_argument("output", type=Path, help="a file, or a directory for a dated name")
    bk.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="into the directory OUTPUT, again every SECONDS until stopped (the compose "
        "stack's backup service)",
    )
    bk.add_argument(
        "--keep", type=int, default=0, help="with --every: keep the newest KEEP backups (0: all)"
    )
    _add_db_args(bk)
    rs = sub.add_parser("restore", help="restore a backup into an empty, migrated database")
    rs.add_argument("backup_file", type=Path)
    rs.add_argument("--force", action="store_true", help="replace a non-empty database's rows")
    _add_db_args(rs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # every file teleread makes (index, objects, spool, secrets, backups) holds patient data
    # or credentials: readable by this user only, whatever the shell's umask
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    from teleread.logs import configure_logging

    try:  # text, or JSON lines (TELEREAD_LOG_FORMAT=json); patient fields redacted in both
        configure_logging(verbose=args.verbose)
    except ValueError as exc:
        sys.stderr.write(f"teleread: {exc}\n")
        return 2
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


def _cmd_verify(args: argparse.Namespace) -> int:
    import storage
    from teleread.allinone import embedded_storage_settings
    from teleread.verify import scrub

    if args.database_url:
        store = storage.from_settings()
    else:  # embedded: the objects live in the data directory
        store = storage.from_settings(embedded_storage_settings(DataDir.resolve(args.data_dir)))
    factory = _session_factory(args)
    report = scrub(
        factory=factory,
        store=store,
        on_problem=None if args.json else lambda problem: print(problem.line()),
    )
    summary = {
        "checked": report.checked,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 1),
        "problems": [
            {"kind": p.kind, "key": p.key, "study_uid": p.study_uid, "sop_uid": p.sop_uid}
            for p in report.problems
        ],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        mib = report.bytes / (1 << 20)
        print(
            f"{report.checked} objects checked ({mib:.1f} MiB in {report.seconds:.1f} s): "
            f"{len(report.problems) or 'no'} problem(s)"
        )
    return 1 if report.problems else 0


def _cmd_db(args: argparse.Namespace) -> int:
    from worklist.db import upgrade

    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    done = upgrade(database_url(data_dir, args.database_url))
    if done.changed:
        print(f"database migrated from {done.before or '(empty)'} to {done.after}")
    else:
        print(f"database is at the latest migration {done.after}")
    return 0


def _add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="networks",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network the site's modalities call from (repeat); with any, other addresses "
        "are refused",
    )
    parser.add_argument(
        "--cert",
        dest="certs",
        action="append",
        default=[],
        metavar="FILE",
        help="a modality's DICOM TLS client certificate (PEM; repeat): accepted for this site "
        "from any address, refused for another site's AE titles",
    )


def _certificates(paths: list[str]) -> list[tuple[str, str]]:
    """(SHA-256 of the DER, file name) of each PEM certificate file."""
    from gateway.sites import certificate_sha256

    return [(certificate_sha256(Path(p)), Path(p).name) for p in paths]


def _fingerprint_or_file(value: str) -> str:
    path = Path(value)
    if path.is_file():
        return _certificates([value])[0][0]
    return value


def _site_line(site: Any) -> str:
    aes = ", ".join(a.ae_title for a in site.ae_titles) or "none"
    networks = ", ".join(n.network for n in site.networks)
    certs = ", ".join(f"{c.sha256[:16]}... ({c.label})" for c in site.certificates)
    devices = "any address"
    if networks or certs:
        devices = "; ".join(
            part
            for part in (networks and f"from {networks}", certs and f"certificates {certs}")
            if part
        )
    line = f"site {site.code} ({site.name}); calling AE titles: {aes}; devices: {devices}"
    return line + (f"; reports' SRs to {site.sr_destination}" if site.sr_destination else "")


def _cmd_sites(args: argparse.Namespace) -> int:
    from gateway.errors import GatewayError
    from worklist import accounts
    from worklist.db import utcnow
    from worklist.errors import WorklistError

    factory = _session_factory(args)
    try:
        with factory.begin() as session:
            if args.sites_command == "add":
                site = accounts.create_site(
                    session=session,
                    code=args.code,
                    name=args.name,
                    ae_titles=args.ae,
                    networks=args.networks,
                    certificates=_certificates(args.certs),
                    now=utcnow(),
                )
            elif args.sites_command == "add-ae":
                site = accounts.add_site_ae_titles(
                    session=session, code=args.code, ae_titles=args.ae, now=utcnow()
                )
            elif args.sites_command == "bind":
                site = accounts.bind_site_devices(
                    session=session,
                    code=args.code,
                    networks=args.networks,
                    certificates=_certificates(args.certs),
                    now=utcnow(),
                )
            elif args.sites_command == "set-pacs":
                site = accounts.set_site_destination(
                    session=session, code=args.code, destination=args.destination
                )
            elif args.sites_command == "unbind":
                site = accounts.unbind_site_devices(
                    session=session,
                    code=args.code,
                    networks=args.networks,
                    certificates=[_fingerprint_or_file(c) for c in args.certs],
                    now=utcnow(),
                )
            else:
                for s in accounts.list_sites(session=session):
                    aes = " ".join(a.ae_title for a in s.ae_titles)
                    networks = " ".join(n.network for n in s.networks) or "*"
                    print(
                        f"{s.code}\t{s.name}\t{aes}\t{networks}\t{len(s.certificates)} cert(s)"
                        f"\t{s.sr_destination or '-'}"
                    )
                return 0
            print(_site_line(site))
    except (WorklistError, GatewayError) as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    _tell_local_gateway(args)
    return 0


def _tell_local_gateway(args: argparse.Namespace) -> None:
    """A gateway running on this data directory (``teleread serve``) re-reads its site list
    now instead of at its next refresh."""
    from gateway.control import notify_sites_changed

    spool = os.environ.get("TELEREAD_GATEWAY_SPOOL_DIR") or DataDir.resolve(args.data_dir).spool
    notify_sites_changed(spool)


def _cmd_users(args: argparse.Namespace) -> int:
    from worklist import accounts
    from worklist.db import utcnow
    from worklist.errors import WorklistError

    if args.users_command != "add":
        return _cmd_users_change(args)
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
                title=args.title,
                now=utcnow(),
            )
            print(f"user {user.username} ({user.role}{', site ' + args.site if args.site else ''})")
    except WorklistError as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_users_change(args: argparse.Namespace) -> int:
    """``users disable|enable|revoke NAME``, audited as done from the command line."""
    from worklist import accounts, audit
    from worklist.audit import AuditAction
    from worklist.db import utcnow

    factory = _session_factory(args)
    now = utcnow()
    new_password: str | None = None
    with factory.begin() as session:
        user = accounts.get_user_by_username(session=session, username=args.username)
        if user is None:
            print(f"teleread: no user {args.username!r}", file=sys.stderr)
            return 1
        if args.users_command == "disable":
            accounts.disable_user(session=session, user=user, now=now)
            action = AuditAction.USER_DISABLED
        elif args.users_command == "enable":
            accounts.enable_user(session=session, user=user, now=now)
            action = AuditAction.USER_ENABLED
        else:
            new_password = accounts.revoke_credential(session=session, user=user, now=now)
            action = (
                AuditAction.USER_TOKENS_REVOKED
                if new_password is None
                else AuditAction.GATEWAY_CREDENTIAL_REVOKED
            )
        audit.record(
            session=session,
            actor=None,
            action=action,
            object_id=user.username,
            detail={"role": user.role, "via": "cli"},
            now=now,
        )
    print(f"user {args.username}: {action.removeprefix('user_').replace('_', ' ')}")
    if new_password is not None:
        print(f"new password (shown once; give it to the township gateway): {new_password}")
    if args.users_command != "enable":
        print("running API processes refuse its tokens within TELEREAD_API_USER_CACHE_SECONDS")
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    from teleread.send import client_tls_context, format_progress, send_paths

    tls = None
    if args.tls or args.tls_ca or args.tls_cert:
        tls = client_tls_context(args.tls_ca, args.tls_cert, args.tls_key)

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
        tls=tls,
    )
    sys.stderr.write("\n")
    print(result.summary())
    return 0 if result.failed == 0 and result.sent > 0 else 1


def _cmd_init(args: argparse.Namespace) -> int:
    from teleread.provision import ProvisionError, load_spec, provision
    from worklist.errors import WorklistError

    try:
        spec = load_spec(args.file)
        outcome = provision(
            spec, _session_factory(args), args.out, new_s3_keys=frozenset(args.new_s3_key)
        )
    except (ProvisionError, WorklistError) as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    for line in outcome.lines or ["nothing to do: the database and the files match"]:
        print(line)
    return 0


def _cmd_storage(args: argparse.Namespace) -> int:
    import storage
    from storage.errors import StorageError
    from teleread.objects import migrate_keys, setup_bucket

    try:
        store = storage.from_settings()
        if args.storage_command == "setup":
            print(setup_bucket(store))
            return 0
        done = migrate_keys(
            factory=_session_factory(args), store=store, dry_run=args.dry_run, limit=args.limit
        )
    except StorageError as exc:
        print(f"teleread: object store: {exc}", file=sys.stderr)
        return 1
    print(
        f"moved {done.moved}, already moved {done.already}, skipped {done.skipped} "
        f"(see the log), still to move {done.remaining}"
    )
    return 1 if done.skipped else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from teleread.demo import write_demo_studies

    for study in write_demo_studies(args.outdir, seed=args.seed):
        print(
            f"{study.modality}\t{study.expected_category or 'routine'}\t"
            f"{len(study.files)} files\t{study.description}\t{study.directory}"
        )
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from teleread.doctor import main as doctor_main

    return doctor_main(
        role=args.role,
        data_dir=args.data_dir,
        database_url=args.database_url,
        as_json=args.json,
        timeout=args.timeout,
        write=print,
        api_host=args.host,
    )


def _backup_every(args: argparse.Namespace) -> int:
    """``backup DIR --every S [--keep N]``: a backup now and every S seconds; a failed one is
    logged and tried again at the next turn; SIGTERM stops between backups."""
    from teleread.signals import StopSignals

    stop = StopSignals().install()
    args.output.mkdir(parents=True, exist_ok=True)
    once = argparse.Namespace(**{**vars(args), "every": None})
    while stop.received is None:
        started = time.monotonic()
        if _cmd_backup(once) != 0:
            log.error("scheduled backup failed", extra={"action": "backup_failed"})
        elif args.keep > 0:
            for old in sorted(args.output.glob("teleread-*.tar.gz"))[: -args.keep]:
                old.unlink(missing_ok=True)
        stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from teleread import backup as bk

    if args.command == "backup" and args.every:
        return _backup_every(args)
    data_dir = DataDir.resolve(args.data_dir) if not args.database_url else None
    url = database_url(data_dir, args.database_url)
    try:
        if args.command == "backup":
            out = args.output / bk.default_backup_name() if args.output.is_dir() else args.output
            done = bk.backup(url, out)
            print(
                f"backed up {done.rows} rows of {len(done.tables)} tables (migration "
                f"{done.revision}) to {done.path} ({done.size} bytes, {done.seconds:.1f} s)"
            )
        else:
            from worklist.db import make_engine

            engine = make_engine(url, pool_size=1, max_overflow=0)
            try:
                with engine.connect() as conn:
                    fresh = bk.current_revision(conn) is None
            finally:
                engine.dispose()
            if fresh:  # a new, empty database: create the schema first
                from worklist.db import upgrade

                upgrade(url)
            result = bk.restore(url, args.backup_file, force=args.force)
            print(
                f"restored {sum(result.rows.values())} rows (migration {result.revision}, "
                f"from {result.source_dialect}) in {result.seconds:.1f} s"
            )
    except bk.BackupError as exc:
        print(f"teleread: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"teleread: database error: {reason}", file=sys.stderr)
        return 1
    return 0


def _cmd_ohif(args: argparse.Namespace) -> int:
    from viewer_api.errors import OhifUnavailable
    from viewer_api.web import ohif

    dest = args.dest or ohif.default_dir()
    if args.if_missing and ohif.installed(dest):
        print(f"OHIF {ohif.VERSION} is installed in {dest}")
        return 0
    try:
        ohif.install(dest, args.tarball)
    except OhifUnavailable as exc:
        sys.stderr.write(f"teleread: {exc}\n")
        return 1
    print(f"OHIF {ohif.VERSION} installed in {dest}: served at /ohif/")
    return 0


def _cmd_triage(args: argparse.Namespace) -> int:
    from worklist.triage.api import read_paths

    for row in read_paths(args.paths, explain_terms=args.explain):
        print(json.dumps(row, ensure_ascii=False))
    return 0


COMMANDS = {
    "serve": _cmd_serve,
    "gateway": _cmd_gateway,
    "api": _cmd_api,
    "db": _cmd_db,
    "init": _cmd_init,
    "storage": _cmd_storage,
    "sites": _cmd_sites,
    "users": _cmd_users,
    "send": _cmd_send,
    "demo-studies": _cmd_demo,
    "triage": _cmd_triage,
    "doctor": _cmd_doctor,
    "ohif": _cmd_ohif,
    "verify": _cmd_verify,
    "backup": _cmd_backup,
    "restore": _cmd_backup,
}


if __name__ == "__main__":
    raise SystemExit(main())
