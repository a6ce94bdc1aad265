"""Files with a BOM, CRLF line endings or tab indentation port correctly and keep their
conventions; revert gives them back byte for byte."""

from __future__ import annotations

import libcst as cst

from porter.port import apply
from porter.revert import revert
from tests.helpers.trees import diff_snapshots, snapshot

EDITED = (
    "megatron/arguments.py",
    "megatron/model/transformer.py",
    "megatron/model/language_model.py",
    "megatron/model/__init__.py",
    "megatron/model/gpt_model.py",
)


def _port_and_revert(tree):
    before = snapshot(tree)
    port = apply("llama", tree)
    ported = {c.path: (tree / c.path).read_bytes() for c in port.changes}
    for rel, data in ported.items():
        compile(data, rel, "exec", dont_inherit=True)
    assert apply("llama", tree).changes == []  # a second apply is a no-op
    revert(tree)
    assert not diff_snapshots(before, snapshot(tree))
    return ported


def test_bom_is_kept(tree):
    for rel in EDITED:
        path = tree / rel
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ported = _port_and_revert(tree)
    for rel in EDITED:
        assert ported[rel].startswith(b"\xef\xbb\xbf") and not ported[rel][3:].startswith(b"\xef\xbb\xbf"), rel
        assert b"\xef\xbb\xbf" not in ported[rel][3:], rel


def test_crlf_is_kept(tree):
    for rel in EDITED:
        path = tree / rel
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    ported = _port_and_revert(tree)
    for rel in EDITED:
        data = ported[rel]
        assert data.count(b"\n") == data.count(b"\r\n") > 0, f"{rel} has bare LF line endings after the port"
    assert b"\r\n" not in ported["megatron/model/rmsnorm.py"]  # porter's own files: LF


def test_tab_indentation_is_kept(tree):
    rel = "megatron/model/transformer.py"
    path = tree / rel
    tabbed = cst.parse_module(path.read_text()).with_changes(default_indent="\t").code
    assert "\n\tdef __init__" in tabbed
    path.write_text(tabbed)
    ported = _port_and_revert(tree)[rel].decode()
    original = set(tabbed.splitlines())
    added = [line for line in ported.splitlines() if line not in original and line.strip()]
    assert added, "the port added nothing to transformer.py"
    statements = [line for line in added if line[:1].isspace() and not line.strip().startswith(("#", ")"))]
    indents = {line[: len(line) - len(line.lstrip())] for line in statements}
    assert all(set(indent) == {"\t"} for indent in indents if not indent.endswith(" ")), indents
    assert any(line.startswith("\t\t") for line in statements)
