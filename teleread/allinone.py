"""`teleread serve`: gateway, county API and housekeeping in one process, on one data dir."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sqlalchemy.orm import Session, sessionmaker

import storage
from storage.settings import StorageSettings
from teleread.bootstrap import Login, ensure_demo_accounts, ensure_gateway_user
from teleread.embedded import DataDir, database_url
from teleread.services import (
    ApiServer,
    build_api,
    start_gateway,
    start_sr_sender,
    wait_for_signal,
)

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
    store = storage.from_settings(embedded_storage_settings(data_dir))  # gateway's and API's
    url = database_url(data_dir, args.database_url)
    upgrade(url)
    secret = os.environ.get("TELEREAD_API_SECRET_KEY") or data_dir.secret("api")
    app = build_api(url, store, secret_key=secret)
    factory: sessionmaker[Session] = app.state.session_factory
    logins = ensure_demo_accounts(factory, data_dir)
    gw_user, gw_password = ensure_gateway_user(factory, data_dir)

    api = ApiServer(app, host=args.host, port=args.http_port)
    api.start()
    housekeeping = Housekeeping(factory, worklist_settings())
    housekeeping.start()
    sr_sender = start_sr_sender(app)

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
    _banner(args, data_dir, ae_title, sites, logins)
    try:
        wait_for_signal()
    finally:
        log.info("stopping")
        stop_gateway()
        api.stop()
        sr_sender.stop()
        housekeeping.stop()
    return 0


def _banner(
    args: argparse.Namespace,
    data_dir: DataDir,
    ae_title: str,
    sites: list[tuple[str, list[str]]],
    logins: list[Login],
) -> None:
    out = sys.stdout
    out.write("\nteleread is running (embedded: SQLite + local object store)\n")
    out.write(f"  data      {data_dir.root}\n")
    out.write(f"  DICOM     {args.host}:{args.dicom_port}  AE title {ae_title}\n")
    for code, aes in sites:
        out.write(f"            site {code}: calling AE titles {' '.join(aes) or '(none)'}\n")
    out.write(f"  Web       http://{args.host}:{args.http_port}/\n")
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
