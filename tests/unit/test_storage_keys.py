"""storage.keys: the DICOM UID grammar and object-key rules."""

from __future__ import annotations

import pytest

from storage.errors import InvalidKey
from storage.keys import (
    check_key,
    check_prefix,
    check_uid,
    instance_key,
    is_valid_uid,
    legacy_instance_key,
)


@pytest.mark.parametrize(
    "uid",
    ["0", "1", "1.2", "1.2.840.10008.1.2.1", "1.0.3", "2.25." + "1" * 38, "1." + "9" * 62],
)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert check_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "01.2",
        "1.02",
        "1.2a",
        "1.2 ",
        " 1.2",
        "1.2\x00",
        "1/2",
        "-1.2",
        "1." + "9" * 63,  # 65 characters
        "١.٢",  # Arabic-Indic digits are not DICOM digits
    ],
)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidKey):
        check_uid(uid)


def test_instance_key() -> None:
    assert instance_key("TS01", "1.2", "1.2.3", "1.2.3.4") == "TS01/1.2/1.2.3/1.2.3.4.dcm"
    assert legacy_instance_key("1.2", "1.2.3", "1.2.3.4") == "1.2/1.2.3/1.2.3.4.dcm"
    with pytest.raises(InvalidKey):
        instance_key("TS01", "1.2", "../..", "1.2.3.4")
    with pytest.raises(InvalidKey):
        instance_key("TS01", "1.2", "1.2.3", "1.2.3.4/../../x")


@pytest.mark.parametrize("site", ["", "..", ".x", "TS/01", "TS 01", "镇01", "x" * 33, "TS01\n"])
def test_a_site_code_that_cannot_prefix_a_key_is_refused(site: str) -> None:
    with pytest.raises(InvalidKey):
        instance_key(site, "1.2", "1.2.3", "1.2.3.4")


@pytest.mark.parametrize("key", ["a", "a/b.dcm", "1.2/3.4/5.6.dcm", "a b/ü.dcm", "x" * 512])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/",
        "a//b",
        ".",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        ".hidden",
        "a/.b",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "x" * 513,
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


@pytest.mark.parametrize("prefix", ["", "1", "1.2", "1.2/", "1.2/3.4/5", "a b/"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a/../", "a//", ".x", "a/.x", "a\\", "a\n"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        check_prefix(prefix)
