"""Audit CSV cells a spreadsheet would evaluate are exported as text."""

import pytest

from worklist.audit_export import formula_safe


@pytest.mark.parametrize(
    "value",
    [
        "=1+1",
        "+1",
        "-1",
        "@SUM(A1)",
        " =1+1",
        "\t=1",
        "\r=1",
        "\nx",
        "＝1+1",
        "＋1",
        "－1",
        "＠A1",
        "\u3000＝1",
        "  ＠x",
    ],
)
def test_formula_forms_get_an_apostrophe(value: str) -> None:
    assert formula_safe(value) == "'" + value


@pytest.mark.parametrize("value", ["", "ct_ts01", "a=b", " hello", "张三", "10.0.0.1"])
def test_plain_text_is_unchanged(value: str) -> None:
    assert formula_safe(value) == value
