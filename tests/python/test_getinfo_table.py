"""The getInfo table of docs/protocol.md against the key itself: every member the table gives a value
for (in code font, CBOR as JSON) must be exactly what a fresh key sends, every member it calls
absent must be absent, the others present, and the key may send no member the table omits."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fido2.ctap2 import Ctap2

TABLE_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_table() -> dict[int, str]:
    text = TABLE_DOC.read_text()
    start = text.index("<!-- getinfo-table")
    end = text.index("<!-- /getinfo-table -->")
    rows = {}
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"0x[0-9A-F]{2}", cells[0]):
            rows[int(cells[0], 16)] = cells[2]
    return rows


def as_json(value):
    """The key's CBOR value as the table writes it (byte strings have no JSON form)."""
    assert not isinstance(value, bytes), "a byte string needs a description, not a value"
    return value


def test_documented_getinfo_table_is_what_the_key_sends(device):
    table = documented_table()
    assert len(table) == 31, sorted(table)
    info = Ctap2(device).send_cbor(Ctap2.CMD.GET_INFO)
    assert set(info) <= set(table), f"members docs/protocol.md does not list: {set(info) - set(table)}"
    for key, cell in table.items():
        if cell == "absent":
            assert key not in info, f"0x{key:02X} is sent, docs/protocol.md says absent"
        elif cell.startswith("`"):
            expected = json.loads(cell.strip("`"))
            assert as_json(info.get(key)) == expected, f"0x{key:02X}: {info.get(key)!r} != {expected!r}"
        else:
            assert key in info, f"0x{key:02X} missing ({cell})"
    assert len(info[0x03]) == 16
