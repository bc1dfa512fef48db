"""Log-in throttling against a real ``teleread serve``: failures lock the account they name,
not the clinic's address, and an ``X-Forwarded-For`` from a peer that is not a trusted proxy
changes neither the throttle nor the audited address."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import Pipeline, running_pipeline

# the loopback peer is not the proxy: its X-Forwarded-For is a lie to be ignored
ENV = {
    "TELEREAD_API_TRUSTED_PROXIES": "192.0.2.1",
    "TELEREAD_API_LOGIN_LOCKOUT_SECONDS": "600",  # no lock ends while the test runs
    # small, so that this address goes over its limit here
    "TELEREAD_API_LOGIN_MAX_FAILURES_PER_ADDRESS": "10",
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path_factory, ENV) as started:
        yield started


def test_one_accounts_failures_do_not_lock_out_the_clinic(pipeline: Pipeline) -> None:
    client = pipeline.client()

    def login(username: str, password: str, spoofed: str) -> int:
        form = {"username": username, "password": password}
        r = client.post("/api/v1/auth/token", data=form, headers={"X-Forwarded-For": spoofed})
        return r.status_code

    # 50 wrong passwords for one account, each claiming another address: the account is
    # locked after 5 all the same (the rest are refused before the password is checked)
    codes = [login("dr_li", "wrong", f"203.0.113.{n}") for n in range(50)]
    assert codes == [401] * 5 + [429] * 45
    # another 5 for a second account: 10 failures from this address, its limit
    assert [login("nurse_ts02", "wrong", "<script>") for _ in range(5)] == [401] * 5
    # another account's right password from the same address still logs in
    assert login("nurse_ts01", pipeline.logins["nurse_ts01"], "203.0.113.200") == 200
    # the address is over its limit: a name that fails from it is held there, whatever
    # address the header claims (the throttle counts the peer, 127.0.0.1)
    assert login("dr_wang", "wrong", "198.51.100.1") == 401
    assert login("dr_wang", pipeline.logins["dr_wang"], "198.51.100.2") == 429
    client.close()

    admin = pipeline.client("admin")
    events = admin.get("/api/v1/audit", params={"action": "login", "limit": 500}).json()
    admin.close()
    outcomes = [e["outcome"] for e in events]
    assert (outcomes.count("denied"), outcomes.count("throttled")) == (11, 46)
    # the embedded gateway logs in too: from 127.0.0.1 as well
    assert {e["client_addr"] for e in events} == {"127.0.0.1"}
