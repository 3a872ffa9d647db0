"""cli/manifest_reader: the one-pass reader gives exactly what PyYAML gives (values and start lines), reads JSON
with a JSON parser (tabs included), and falls back to PyYAML for anything outside the block subset."""

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.cli import manifest_reader
from access_hygiene.cli.manifest_reader import LOADER, ManifestError, _node_value, read_documents, read_json, read_yaml

pytestmark = pytest.mark.unit


def pyyaml_reading(text: str) -> list[tuple[Any, int | None, tuple[int, ...]]]:
    """What the scan computed before: yaml load for values, a second compose pass for start lines."""
    values = list(yaml.load_all(text, Loader=LOADER))
    nodes = list(yaml.compose_all(text, Loader=LOADER))
    result = []
    for value, node in zip(values, nodes, strict=True):
        if not isinstance(value, dict):
            result.append((value, None, ()))
            continue
        items = _node_value(node, "items")
        lines = tuple(i.start_mark.line + 1 for i in items.value) if isinstance(items, yaml.SequenceNode) else ()
        result.append((value, node.start_mark.line + 1, lines))
    return result


def reader_reading(text: str) -> list[tuple[Any, int | None, tuple[int, ...]]]:
    return [
        (d.value, d.line, d.item_lines) if isinstance(d.value, dict) else (d.value, None, ()) for d in read_yaml(text)
    ]


def assert_same_as_pyyaml(text: str) -> None:
    try:
        expected = pyyaml_reading(text)
    except yaml.YAMLError:
        with pytest.raises(ManifestError, match="invalid YAML/JSON"):
            reader_reading(text)
        return
    actual = reader_reading(text)
    assert repr(actual) == repr(expected)  # repr: 1 and True, 1.0 and 1 differ


EDGE_CASES = [
    "",
    "# only a comment\n",
    "a: 1\n---\n",
    "---\n",
    "---\na: 1\n",
    "# c\n---\na: 1\n",
    "a: 1\n---\n# only\n---\nb: 2",
    "a: yes\nb: no\nc: on\nd: ~\ne: null\nf: 0x1A\ng: 1_000\nh: 2001-12-14\ni: 1e3\nj: .inf\nk: -.5\nl: 'it''s'\n"
    'm: "q"\nn: \'\'\no: ""\np: 012\nq: 1:20\nr: +1\n',
    "a:\n- 1\n- 2\nb:\n  - x: 1\n    y: 2\n  -\n    z: 3\n  -\n",
    "a: b: c\n",
    "a: [1, 2]\nb: {c: d}\n",
    "a: {}\nb: []\nc:\n- {}\n- []\n",
    "a: |\n  text\n",
    "a: >\n  f\n  g\n",
    "a: &x 1\nb: *x\n",
    "a: !!str 1\n",
    "a: multi\n  line\n",
    "a: 1 # comment\n",
    "a: 'x' # comment\n",
    "a:\n  b: 1\n c: 2\n",
    'a: "esc\\n"\n',
    "- a\n- - b\n",
    "? complex\n: v\n",
    "<<: {a: 1}\nb: 2\n",
    "a: b\r\nc: d\r\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\n...\n---\nb: 2\n",
    "x: -\n",
    "x: -1\ny: -a\nz: :a\n",
    "'quoted key': 1\n",
    "a: 'unterminated\n  more'\n",
    "a:   spaced   \n",
    "a   : 1\n",
    "items:\n- a: 1\n-\n  b: 2\n- c\nkind: List\n",
    "kind: List\nitems:\n  - a: 1\n\n  # c\n  - b: 2\n",
    "  a: 1\n  b: 2\n",
    "  a: 1\nb: 2\n",
    "a: 1\n---  \nb: 2\n",
    "a: 1\n--- # c\nb: 2\n",
    "--- a: 1\n",
    "--- {a: 1}\n",
    "---\n---\n",
    "a: x#y\n",
    "a: 'x'y'\n",
    "a: =\n",
    "a: 1\n----\n",
    "a: \u00e9t\u00e9\n",
    "a: \x07\n",
    "\ufeffa: 1\n",
    "a:\n  - b\n  c: 1\n",
    "a: b\n  - c\n",
    "a: @x\n",
    "a: ,x\n",
    "a:\n-\n- 1\n",
    "a: true\nTrue: 1\n1: one\nnull: n\n",
    "-\n",
    "- \n- 1",
    "a: ' lead'\nb: 'trail '\n",
    "a: 'x\ty'\n",
    "foo: bar:baz\n",
    "url: http://x:80/y\n",
    "a: - b\n",
    "a: b\n\t\n",
    "a:\n\tb: 1\n",
    "a: 1\nitems:\n- x: 1\nitems:\n- y: 2\n- z: 3\n",
    '{"kind": "List", "items": [{"a": 1},\n  {"b": 2}]}\n',
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_read_as_pyyaml_reads_them(text: str) -> None:
    assert_same_as_pyyaml(text)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["yes", "No", "on", "null", "~", "0x10", "012", "1e3", "1_0", "2001-01-01", ".inf", "<<", "="]),
    st.text(alphabet=" -:#'\"&*!|>{}[],%@`?ab\u00e9\t\n", max_size=8),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz-./0123456789", min_size=1, max_size=12),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_SCALARS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    documents=st.lists(
        _VALUES | st.builds(lambda items: {"kind": "List", "items": items}, st.lists(_VALUES)), min_size=1, max_size=3
    ),
    flow=st.sampled_from([False, None]),
    indent=st.sampled_from([2, 4]),
    width=st.sampled_from([20, 80]),
    explicit_start=st.booleans(),
)
def test_dumped_documents_read_as_pyyaml_reads_them(
    documents: list[Any], flow: bool | None, indent: int, width: int, explicit_start: bool
) -> None:
    text = yaml.safe_dump_all(
        documents, default_flow_style=flow, indent=indent, width=width, explicit_start=explicit_start, sort_keys=False
    )
    assert_same_as_pyyaml(text)


def test_pure_python_fallback_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a: [1, 2]\n---\nkind: List\nitems:\n- {b: 2}\n- c: 3\n"
    with_libyaml = reader_reading(text)
    monkeypatch.setattr(manifest_reader, "LOADER", yaml.SafeLoader)
    assert reader_reading(text) == with_libyaml


def test_json_with_tabs_and_item_lines() -> None:
    items = [{"kind": "Role", "metadata": {"name": f"r{i}"}} for i in range(3)]
    text = json.dumps({"apiVersion": "v1", "kind": "RoleList", "items": items}, indent="\t")
    [document] = read_json(text)
    assert document.value["items"] == items
    lines = text.splitlines()
    assert [lines[n - 1].strip() for n in document.item_lines] == ["{", "{", "{"]
    assert document.item_lines == tuple(i + 1 for i, line in enumerate(lines) if line == "\t\t{")


def test_json_values_and_arrays() -> None:
    documents = read_json('{"kind": "Role"}\n\n[{"kind": "A"},\n {"kind": "B"}]\n')
    assert [d.value for d in documents] == [
        {"kind": "Role"},
        {"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]},
    ]
    assert [(d.index, d.line, d.item_lines) for d in documents] == [(1, 1, ()), (2, 3, (3, 4))]


@pytest.mark.parametrize("text", ['{"kind": "Role",}', '{"kind" "Role"}', "[1, 2", '{"a": 1} x', '{\n\t"a": }'])
def test_invalid_json_is_an_error_with_position(text: str) -> None:
    with pytest.raises(ManifestError, match=r"invalid JSON: .*line \d+ column"):
        read_json(text)


def test_neither_json_nor_yaml_reports_the_json_error() -> None:
    with pytest.raises(ManifestError, match=r"invalid JSON: Expecting value: line 2 column 7"):
        read_documents('{\n\t"a": [}', json_hint=True)


def test_json_named_file_holding_yaml_is_read_as_yaml() -> None:
    [document] = read_documents("kind: Role\nmetadata:\n  name: r\n", json_hint=True)
    assert document.value == {"kind": "Role", "metadata": {"name": "r"}}
