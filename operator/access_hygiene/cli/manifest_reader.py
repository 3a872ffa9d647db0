"""Reading manifest files in one pass: objects plus the line each one starts on (for SARIF).

YAML: a document is split off the stream at its `---` marker and read by a line-based reader for the block
style that `kubectl get -o yaml` and YAML dumpers print (mappings, sequences, plain and simply quoted
scalars, `{}`/`[]`). Scalars are resolved with PyYAML's own implicit resolvers and constructors, so
values are exactly what `yaml.safe_load` gives. A document the reader does not handle exactly (flow
collections, anchors, tags, block scalars, escapes, multi-line scalars, ...) is read by PyYAML
(LibYAML's CSafeLoader when available), composing and constructing it in the same pass; so is a whole
file with constructs that affect document boundaries (directives, `...`, CR line breaks, BOM,
non-printable characters). Any error is reported by PyYAML on the whole file, with its position.

JSON (`.json` files and stdin starting with `{` or `[`): Python's C JSON scanner, walking the top level
of a `List` by hand to know where each item starts; a top-level array is read as a list of objects.
"""

import itertools
import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

# PyYAML's LibYAML binding when built with it; the pure-Python loader otherwise (same results, slower).
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HAS_LIBYAML = LOADER is not yaml.SafeLoader
LIBYAML_NOTICE = "notice: PyYAML has no LibYAML; reading YAML with the slower pure-Python loader"


class ManifestError(Exception):
    """Text that is not valid YAML/JSON; the message names the position."""


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a file: its value, 1-based position in the stream, the 1-based line its value starts
    on, and the line each element of its top-level `items` starts on (for `kind: List` and `*List`)."""

    value: Any
    index: int
    line: int
    item_lines: tuple[int, ...] = ()


# --- YAML ----------------------------------------------------------------------------------------------

# Anything that can move document boundaries or that the line reader must not see: the YAML loader reads the file.
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DOCUMENT_START = re.compile(r"^---(?=[ \t]|$)", re.MULTILINE)
_SIMPLE_TAGS = frozenset(
    {
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
    }
)
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
_CONSTRUCTOR = yaml.SafeLoader("")
_plain_values: dict[str, Any] = {}
_PLAIN_CACHE_LIMIT = 50_000


class _UnsupportedError(Exception):
    """The line reader cannot read this document exactly; PyYAML reads it."""


def _plain(text: str) -> Any:
    """A plain scalar's value as yaml.safe_load constructs it (null, bool, int, float, timestamp, str)."""
    try:
        return _plain_values[text]
    except KeyError:
        pass
    if ": " in text or " #" in text or text.endswith(":") or "\t" in text:
        raise _UnsupportedError
    tag = "tag:yaml.org,2002:str"
    for candidate, pattern in _RESOLVERS.get(text[0], []) + _RESOLVERS.get(None, []):
        if pattern.match(text):
            tag = candidate
            break
    if tag not in _SIMPLE_TAGS:
        raise _UnsupportedError
    value = text if tag == "tag:yaml.org,2002:str" else _CONSTRUCTOR.yaml_constructors[tag](
        _CONSTRUCTOR, yaml.ScalarNode(tag, text)
    )  # fmt: skip
    if len(_plain_values) >= _PLAIN_CACHE_LIMIT:
        _plain_values.clear()
    _plain_values[text] = value
    return value


def _scalar(text: str) -> Any:
    first = text[0]
    if first not in _INDICATORS:
        return _plain(text)
    if first == "'":
        inner = text[1:-1]
        if len(text) < 2 or text[-1] != "'" or "'" in inner.replace("''", ""):
            raise _UnsupportedError
        return inner.replace("''", "'")
    if first == '"':
        inner = text[1:-1]
        if len(text) < 2 or text[-1] != '"' or '"' in inner or "\\" in inner:
            raise _UnsupportedError
        return inner
    if text == "{}":
        return _EMPTY_MAP
    if text == "[]":
        return _EMPTY_SEQ
    if first in "-?:" and len(text) > 1 and text[1] != " ":
        return _plain(text)
    raise _UnsupportedError


# One content line, parsed: (indent, key, value, item). key is _NO_KEY for "- scalar" and "-"; value is _OPEN
# when the value follows on the next lines; item is -1 for a plain line, 0 for "-" alone, else the column of
# what follows "- ". Lines repeat a lot in dumps (keys, kinds, verbs), so entries are cached by the raw line.
_Entry = tuple[int, Any, Any, int]
_NO_KEY, _OPEN, _SKIP, _BAD = object(), object(), object(), object()
_entries: dict[str, Any] = {}
_ENTRY_CACHE_LIMIT = 50_000


def _line_entry(line: str) -> Any:
    content = line.lstrip(" ")
    if not content or content[0] == "#":
        return _SKIP
    if content[0] == "\t":
        return _BAD  # tabs before content (even on a blank line, for LibYAML): PyYAML decides
    indent = len(line) - len(content)
    content = content.rstrip(" \t")
    item = -1
    try:
        if content[0] == "-" and (len(content) == 1 or content[1] == " "):
            if len(content) == 1:
                return (indent, _NO_KEY, _OPEN, 0)
            rest = content[2:]
            content = rest.lstrip(" ")
            if content[0] == "#" or (content[0] == "-" and (len(content) == 1 or content[1] == " ")):
                return _BAD  # "- # comment", "- - x"
            item = indent + 2 + len(rest) - len(content)
        split = _key(content)
        if split is None:
            return (indent, _NO_KEY, _scalar(content), item) if item > 0 else _BAD
        key_text, rest = split
        return (indent, _plain(key_text), _scalar(rest) if rest else _OPEN, item)
    except _UnsupportedError:
        return _BAD


_EMPTY_MAP, _EMPTY_SEQ = object(), object()


def _fresh(value: Any) -> Any:
    if value is _EMPTY_MAP:
        return {}
    if value is _EMPTY_SEQ:
        return []
    return value


class _BlockReader:
    """Reads one block-style YAML document from its parsed content lines."""

    __slots__ = ("entries", "item_lines", "numbers", "seen_items", "size")

    def __init__(self, entries: list[_Entry], numbers: list[int]) -> None:
        self.entries, self.numbers = entries, numbers
        self.size = len(entries)
        self.item_lines: list[int] = []
        self.seen_items = False

    def document(self) -> Any:
        if not self.size:
            return None
        value, end = self.node(0, True)
        if end != self.size:
            raise _UnsupportedError
        return value

    def node(self, i: int, top: bool = False) -> tuple[Any, int]:
        indent, key, _, item = self.entries[i]
        if item >= 0:
            return self.sequence(i, indent, None)
        if key is not _NO_KEY:
            return self.mapping(i, indent, top)
        raise _UnsupportedError

    def block(self, i: int, indent: int, record: bool) -> tuple[Any, int]:
        """The value of `key:` (at `indent`) on the following lines: a nested block, an indentless sequence, or null."""
        if i < self.size:
            line_indent, _, _, item = self.entries[i]
            if item >= 0 and line_indent >= indent:
                if record:
                    self.item_lines = []
                return self.sequence(i, line_indent, self.item_lines if record else None)
            if line_indent > indent:
                return self.node(i)
        return None, i

    def mapping(self, i: int, indent: int, top: bool = False) -> tuple[dict[Any, Any], int]:
        """A block mapping whose first key is on entry i (for "- key: value", the part after "- ")."""
        entries, size = self.entries, self.size
        line_indent, key, value, item = entries[i]
        result: dict[Any, Any] = {}
        while True:
            i += 1
            record = False
            if top and key == "items" and not self.seen_items:  # the first `items` key gives the lines, as before
                self.seen_items, record = True, True
            if value is _OPEN:
                value, i = self.block(i, indent, record)
            result[key] = _fresh(value)
            if i >= size:
                return result, i
            line_indent, key, value, item = entries[i]
            if line_indent != indent:
                if line_indent > indent:
                    raise _UnsupportedError
                return result, i
            if item >= 0 or key is _NO_KEY:
                raise _UnsupportedError

    def sequence(self, i: int, indent: int, record: list[int] | None) -> tuple[list[Any], int]:
        entries, size = self.entries, self.size
        result: list[Any] = []
        while i < size:
            line_indent, key, value, item = entries[i]
            if line_indent != indent or item < 0:
                if line_indent > indent:
                    raise _UnsupportedError
                break
            if item == 0:  # "-" alone: the item is on the next lines, indented deeper, or null
                i += 1
                if i < size and entries[i][0] > indent:
                    if record is not None:
                        record.append(self.numbers[i])
                    value, i = self.node(i)
                else:
                    if record is not None:
                        record.append(self.numbers[i - 1])
                    value = None
            else:
                if record is not None:
                    record.append(self.numbers[i])
                if key is not _NO_KEY:
                    value, i = self.mapping(i, item)
                else:
                    value, i = _fresh(value), i + 1
            result.append(value)
        return result, i


def _key(text: str) -> tuple[str, str] | None:
    """("key", "rest of the line") for a `key: value` / `key:` line with a plain key, else None."""
    position = text.find(": ")
    if position < 0:
        if text[-1] != ":":
            return None
        key, rest = text[:-1], ""
    else:
        key, rest = text[:position], text[position + 2 :].lstrip(" ")
    key = key.rstrip(" ")
    if not key or " #" in key:
        return None
    if key[0] in _INDICATORS and not (key[0] in "-?:" and len(key) > 1 and key[1] != " "):
        return None
    return key, rest


def _read_block(chunk: str) -> tuple[Any, int | None, tuple[int, ...]]:
    """(value, 0-based line of its first content line or None, item lines) of one document's text."""
    entries: list[_Entry] = []
    numbers: list[int] = []
    cache = _entries
    for number, line in enumerate(chunk.split("\n")):
        entry = cache.get(line)
        if entry is None:
            if len(cache) >= _ENTRY_CACHE_LIMIT:
                cache.clear()
            entry = cache[line] = _line_entry(line)
        if entry is _SKIP:
            continue
        if entry is _BAD:
            raise _UnsupportedError
        entries.append(entry)
        numbers.append(number)
    reader = _BlockReader(entries, numbers)
    value = reader.document()
    return value, (numbers[0] if numbers else None), tuple(reader.item_lines)


def _node_value(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return None


def _loader_documents(text: str, first_index: int, line_offset: int) -> Iterator[Document]:
    """Documents read by PyYAML (compose and construct in one pass per document)."""
    loader = LOADER(text)
    try:
        index = first_index
        while loader.check_node():
            node = loader.get_node()
            value = loader.construct_document(node) if node is not None else None
            line = node.start_mark.line + 1 + line_offset if node is not None else 0
            items = _node_value(node, "items") if node is not None else None
            item_lines = (
                tuple(item.start_mark.line + 1 + line_offset for item in items.value)
                if isinstance(items, yaml.SequenceNode)
                else ()
            )
            yield Document(value, index, line, item_lines)
            index += 1
    except yaml.YAMLError as error:
        raise ManifestError(f"invalid YAML/JSON: {error}") from None
    finally:
        loader.dispose()


def _loader_only(text: str) -> bool:
    """Directives, `...`, CR or Unicode line breaks, a BOM or characters YAML rejects: PyYAML reads the file."""
    if text.isascii():
        if _ASCII_CONTROL.search(text):
            return True
    elif _NON_PRINTABLE.search(text) or any(c in text for c in "\x85\u2028\u2029\ufeff"):
        return True
    return "\r" in text or text.startswith(("%", "...")) or "\n%" in text or "\n..." in text


def read_yaml(text: str) -> Iterator[Document]:
    """The documents of a YAML stream, in order (empty documents included, as yaml.safe_load_all gives them)."""
    if _loader_only(text):
        yield from _loader_documents(text, 1, 0)
        return
    starts = [match.start() for match in _DOCUMENT_START.finditer(text)]
    bounds = ([0] if not starts or starts[0] != 0 else []) + starts + [len(text)]
    starts_with_marker = bool(starts) and starts[0] == 0
    documents: list[Document] = []
    index, line = 1, 0
    for position, (begin, end) in enumerate(itertools.pairwise(bounds)):
        chunk = text[begin:end]
        explicit = position > 0 or starts_with_marker
        base = line
        line += chunk.count("\n")
        body: str | None = chunk
        if explicit:
            marker_end = chunk.find("\n")
            marker_rest = chunk[3:marker_end] if marker_end >= 0 else chunk[3:]
            body = chunk[marker_end + 1 :] if marker_end >= 0 else ""
            base += 1
            if marker_rest.strip() and not marker_rest.strip().startswith("#"):
                body = None  # content on the `---` line: PyYAML reads it
        try:
            if body is None:
                raise _UnsupportedError
            value, first, item_lines = _read_block(body)
            if first is None and not explicit and position == 0:
                continue  # comments before the first `---` are not a document
            document = Document(value, index, base + (first or 0) + 1, tuple(base + n + 1 for n in item_lines))
        except _UnsupportedError:
            try:
                found = list(_loader_documents(chunk, index, base - (1 if explicit else 0)))
            except ManifestError:
                # Report the error as PyYAML sees the whole stream (positions in the file).
                yield from _loader_documents(text, 1, 0)
                return
            if not found:
                continue
            document = found[0]
            if len(found) > 1:  # the split was wrong (should not happen): read the whole stream instead
                yield from _loader_documents(text, 1, 0)
                return
        documents.append(document)
        index += 1
    yield from documents


# --- JSON ----------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_value(text: str, position: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, position)
    except StopIteration:
        raise json.JSONDecodeError("Expecting value", text, position) from None


def _json_top(text: str, position: int) -> tuple[Any, int, list[int]]:
    """A top-level JSON value; for an object, also where each element of its "items" array starts."""
    if text[position] == "[":
        offsets: list[int] = []
        items, end = _json_array(text, position, offsets)
        return {"apiVersion": "v1", "kind": "List", "items": items}, end, offsets
    if text[position] != "{":
        value, end = _json_value(text, position)
        return value, end, []
    result: dict[str, Any] = {}
    offsets = []
    position = _WHITESPACE.match(text, position + 1).end()  # type: ignore[union-attr]
    if text[position : position + 1] == "}":
        return result, position + 1, offsets
    while True:
        if text[position : position + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, position)
        key, position = _scanstring(text, position + 1)
        position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
        if text[position : position + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, position)
        position = _WHITESPACE.match(text, position + 1).end()  # type: ignore[union-attr]
        if key == "items" and text[position : position + 1] == "[":
            offsets = []
            result[key], position = _json_array(text, position, offsets)
        else:
            result[key], position = _json_value(text, position)
        position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
        separator = text[position : position + 1]
        position = _WHITESPACE.match(text, position + 1).end()  # type: ignore[union-attr]
        if separator == "}":
            return result, position, offsets
        if separator != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, position - 1)


def _json_array(text: str, position: int, offsets: list[int] | None = None) -> tuple[list[Any], int]:
    items: list[Any] = []
    position = _WHITESPACE.match(text, position + 1).end()  # type: ignore[union-attr]
    if text[position : position + 1] == "]":
        return items, position + 1
    while True:
        if offsets is not None:
            offsets.append(position)
        value, position = _json_value(text, position)
        items.append(value)
        position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
        separator = text[position : position + 1]
        position = _WHITESPACE.match(text, position + 1).end()  # type: ignore[union-attr]
        if separator == "]":
            return items, position
        if separator != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, position - 1)


def read_json(text: str, *, positions: bool = True) -> list[Document]:
    """The JSON values of a text (one, or several separated by whitespace); raises ManifestError.
    positions=False skips the item lines (each value is then decoded in one call, which also shares the
    key strings between items: less memory for a large List)."""
    documents: list[Document] = []
    position = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    counted, line = 0, 1
    try:
        while position < len(text):
            offsets: list[int] = []
            if positions:
                value, end, offsets = _json_top(text, position)
            else:
                value, end = _DECODER.raw_decode(text, position)
                if isinstance(value, list):
                    value = {"apiVersion": "v1", "kind": "List", "items": value}
            line += text.count("\n", counted, position)
            counted, top_line = position, line
            item_lines = []
            for offset in offsets:
                line += text.count("\n", counted, offset)
                counted = offset
                item_lines.append(line)
            documents.append(Document(value, len(documents) + 1, top_line, tuple(item_lines)))
            position = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    except (json.JSONDecodeError, RecursionError) as error:
        raise ManifestError(f"invalid JSON: {error}") from None
    return documents


def looks_like_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def read_documents(text: str, *, json_hint: bool, positions: bool = True) -> list[Document]:
    """Documents of a file: JSON first when the name or the content says so, else YAML (JSON is YAML too).
    positions=False: JSON List items may come without their lines (YAML gives them for free)."""
    if json_hint or looks_like_json(text):
        try:
            return read_json(text, positions=positions)
        except ManifestError as json_error:
            try:
                return list(read_yaml(text))
            except ManifestError:
                raise json_error from None
    return list(read_yaml(text))
