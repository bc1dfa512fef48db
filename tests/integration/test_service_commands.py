"""The commands the compose stack's services run besides the API and the gateway themselves:
`teleread gateway health` (the gateway's healthcheck) and `teleread backup --every`
(the backup service)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from teleread.services import gateway_answers
from tests.processes import Proc, free_port, teleread_env
from worklist.db import upgrade


@pytest.fixture
def picky_scp() -> Iterator[int]:
    """A DICOM listener that, like the gateway, refuses calling AE titles it does not know."""
    ae = AE(ae_title="TELEREAD")
    ae.add_supported_context(Verification)
    ae.require_calling_aet = ["CT_TS01"]
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def test_gateway_health_is_a_dicom_answer_even_a_refusal(picky_scp: int) -> None:
    assert gateway_answers("127.0.0.1", picky_scp, timeout=5) is None
    problem = gateway_answers("127.0.0.1", free_port(), timeout=2)
    assert problem is not None and "no DICOM answer" in problem


def test_scheduled_backups_keep_the_newest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'teleread.db'}"
    upgrade(url)
    out = tmp_path / "backups"
    proc = Proc(
        ["backup", str(out), "--every", "1.1", "--keep", "2", "--database-url", url],
        teleread_env(),
        tmp_path / "backup.log",
    )
    try:
        deadline = time.monotonic() + 60
        made: set[str] = set()
        while len(made) < 3 and time.monotonic() < deadline:  # names are per second
            made |= {p.name for p in out.glob("teleread-*.tar.gz")}
            time.sleep(0.1)
        assert len(made) >= 3, proc.output()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output()
    finally:
        proc.stop()
    kept = sorted(p.name for p in out.glob("teleread-*.tar.gz"))
    assert len(kept) == 2 and min(kept) >= sorted(made)[-2]  # the newest ones
