"""`teleread serve`: gateway, county API and housekeeping in one process, on one data dir."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import storage
from storage.settings import StorageSettings
from teleread.api_workers import WorkersFailed
from teleread.bootstrap import Login, ensure_demo_accounts, ensure_gateway_user
from teleread.embedded import DataDir, database_url
from teleread.services import (
    build_api,
    housekeeping_engine,
    start_api_server,
    start_gateway,
    start_sr_sender,
    wait_for_signal,
)
from viewer_api.settings import ApiSettings

log = logging.getLogger(__name__)


def embedded_storage_settings(data_dir: DataDir) -> StorageSettings:
    """The environment's storage settings, the filesystem store's root in the data directory
    unless ``TELEREAD_STORAGE_ROOT`` says otherwise."""
    settings = StorageSettings()
    if "root" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"root": data_dir.objects})


def serve(args: argparse.Namespace) -> int:
    from worklist import accounts
    from worklist.db import upgrade
    from worklist.housekeeping import Housekeeping
    from worklist.settings import get_settings as worklist_settings

    data_dir = DataDir.resolve(args.data_dir)
    storage_settings = embedded_storage_settings(data_dir)
    store = storage.from_settings(storage_settings)  # gateway's and API's
    url = database_url(data_dir, args.database_url)
    upgrade(url)
    secret = os.environ.get("TELEREAD_API_SECRET_KEY") or data_dir.secret("api")
    settings = ApiSettings(secret_key=secret)
    if settings.workers > 1:  # the API in worker processes; this one keeps the rest
        app = None
        factory = housekeeping_engine(url)
    else:
        app = build_api(url, store, secret_key=secret)
        factory = app.state.session_factory
    # before any worker starts: made once
    logins = ensure_demo_accounts(factory, data_dir)
    gw_user, gw_password = ensure_gateway_user(factory, data_dir)

    try:
        api = start_api_server(
            app,
            settings,
            url=url,
            host=args.host,
            port=args.http_port,
            verbose=args.verbose,
            storage_root=str(storage_settings.root) if storage_settings.root else None,
        )
    except WorkersFailed as exc:
        log.error(str(exc), extra={"action": "api_not_started"})
        return 1
    housekeeping = Housekeeping(factory, worklist_settings())
    housekeeping.start()
    sr_sender = start_sr_sender(factory, store)

    ae_title = args.ae_title or "TELEREAD"
    stop_gateway = start_gateway(
        store,
        ae_title=ae_title,
        host=args.host,
        port=args.dicom_port,
        spool_dir=os.environ.get("TELEREAD_GATEWAY_SPOOL_DIR") or data_dir.spool,
        api_url=f"http://127.0.0.1:{args.http_port}",
        api_username=gw_user,
        api_password=gw_password,
    )
    with factory() as session:
        sites = [
            (s.code, [a.ae_title for a in s.ae_titles])
            for s in accounts.list_sites(session=session)
        ]
    _banner(args, data_dir, ae_title, sites, logins, settings.workers)
    try:
        wait_for_signal(keep_going=lambda: not api.failed.is_set())
    finally:
        log.info("stopping")
        stop_gateway()
        api.stop()
        sr_sender.stop()
        housekeeping.stop()
    return 1 if api.failed.is_set() else 0


def _banner(
    args: argparse.Namespace,
    data_dir: DataDir,
    ae_title: str,
    sites: list[tuple[str, list[str]]],
    logins: list[Login],
    workers: int,
) -> None:
    out = sys.stdout
    out.write("\nteleread is running (embedded: SQLite + local object store)\n")
    out.write(f"  data      {data_dir.root}\n")
    out.write(f"  DICOM     {args.host}:{args.dicom_port}  AE title {ae_title}\n")
    for code, aes in sites:
        out.write(f"            site {code}: calling AE titles {' '.join(aes) or '(none)'}\n")
    processes = f"{workers} API process{'es' if workers > 1 else ''}"
    out.write(f"  Web       http://{args.host}:{args.http_port}/  ({processes})\n")
    out.write(f"  API docs  http://{args.host}:{args.http_port}/docs\n")
    if logins:
        out.write("  Demo logins (also in demo-logins.txt in the data directory):\n")
        for lg in logins:
            site = f" site {lg.site}" if lg.site else ""
            out.write(f"    {lg.username:<12} {lg.password:<14} {lg.role}{site}\n")
    else:
        out.write(f"  Logins: see {data_dir.logins_file}\n")
    out.write("Press Ctrl-C to stop.\n")
    out.flush()
