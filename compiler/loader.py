"""Safe YAML loading that remembers where every value came from (DESIGN.md §4, §5).

PyYAML composes the text into a node graph; this module constructs the Python values itself so it
can record the line and column of every key and value, reject duplicate keys (PyYAML keeps the
last one silently) and refuse any tag that would build a Python object.
"""

from __future__ import annotations

import codecs
import copy
import functools
import json
import math
import os
import re
import stat
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.tokens import AnchorToken

from nnrun.compiler.datasets import IN_UTF8, kernel_file
from nnrun.compiler.diagnostics import (LOOKALIKE_SPACES, OVERRIDE_FILE, SECTIONS, SLIPPED_IN,
                                        Diagnostic, SpecError, character_name,
                                        field_defaults_of_type, format_path, list_fields_of,
                                        quoted, spec_field_path, suggest)
from nnrun.compiler.schema import SHORT_FORM_FIELDS

SpecPath = tuple[Hashable, ...]

_YAML_TAG = "tag:yaml.org,2002:"
_MAPPING_TAG = _YAML_TAG + "map"
_SEQUENCE_TAG = _YAML_TAG + "seq"
_MERGE_TAG = _YAML_TAG + "merge"
_SCALAR_TAGS = {
    _YAML_TAG + name for name in ("null", "bool", "int", "float", "str", "timestamp")
}
# Alias expansion can grow a small file exponentially ("billion laughs"); a spec never needs this.
_MAX_NODES = 200_000


@dataclass(frozen=True)
class Position:
    file: str
    line: int
    col: int
    # The `--set` argument that produced this value; diagnostics use it as their `where`.
    origin: str = ""


@dataclass(frozen=True)
class NodePositions:
    value: Position
    key: Position | None = None


@dataclass(frozen=True)
class Loaded:
    filename: str
    data: dict
    positions: dict[SpecPath, NodePositions]
    # where data does not hold what the file says, around the loader's errors (a refused value,
    # a duplicate key's first value kept): the shape checks set these places aside
    set_aside: tuple[SpecPath, ...] = ()

    def location(self, path: SpecPath, key: bool = False) -> Position:
        """Position of `path`, or of its nearest recorded ancestor (a missing field's mapping)."""
        path = tuple(path)
        exact = self.positions.get(path)
        if exact is not None:
            return exact.key if key and exact.key is not None else exact.value
        for length in range(len(path) - 1, -1, -1):
            ancestor = self.positions.get(path[:length])
            if ancestor is not None:
                return ancestor.value
        return Position(self.filename, 1, 1)

    def overrides_within(self, path: SpecPath) -> list[str]:
        """The --set arguments that set a value inside the node at `path` (a layer's type set
        from the command line, reported at the layer's line in the file)."""
        path = tuple(path)
        return sorted({origin for inner, origin in self.overridden
                       if inner[:len(path)] == path})

    def overrides_shaping(self, layers: set[int], own: int | None) -> list[str]:
        """The --set arguments that shaped the input of the layer `own` or its window:
        `model.input_shape`, the shape fields of `layers` (those whose outputs reach it) and the
        fields of its own that decide its output's size, though its line shows none of them."""
        return sorted({origin for inner, origin in self.overridden
                       if _shapes_layer(inner, layers, own)})

    def overrides_in_order(self) -> list[str]:
        """The --set arguments whose values the spec holds, in the order they were given
        (replayed so, a later one over an earlier one gives this spec again)."""
        given = {node.value.origin: node.value.line for node in self.positions.values()
                 if node.value.origin}
        return sorted(given, key=given.get)

    @functools.cached_property
    def overridden(self) -> list[tuple[SpecPath, str]]:
        """(path, --set argument) of the values set from the command line: few, and asked
        about by every diagnostic of a file that may have thousands."""
        return [(path, node.value.origin) for path, node in self.positions.items()
                if node.value.origin]

    def typed_by_default(self, path: SpecPath) -> bool:
        """Whether the mapping at `path` is a section the file leaves out, made by an override
        with its default type (`--set optimizer.beta1=0.9`: sgd's)."""
        made = self.positions.get(tuple(path))
        return made is not None and bool(made.value.origin) and \
            (*path, "type") not in self.positions

    def position(self, path: SpecPath, key: bool = False) -> tuple[int, int]:
        location = self.location(path, key)
        return location.line, location.col


# A layer's fields that decide the shape of its output (a whole layer set counts too); those
# but the output's count of units or filters decide whether its own window fits its input.
SHAPE_FIELDS = frozenset({"type", "units", "filters", "kernel_size", "stride", "padding",
                          "dilation", "pool_size", "output_padding", "scale", "shape", "axis",
                          "inputs"})
WINDOW_FIELDS = SHAPE_FIELDS - {"units", "filters"}


def _shapes_layer(inner: SpecPath, layers: set[int], own: int | None) -> bool:
    """Whether an override at `inner` is model.input_shape, or a shape field of one of
    `layers`, or a window field of the layer `own`."""
    if inner[:2] == ("model", "input_shape"):
        return True
    if inner[:2] != ("model", "layers") or len(inner) < 3:
        return False
    index, field_name = inner[2], inner[3] if len(inner) > 3 else None
    return (index in layers and (field_name is None or field_name in SHAPE_FIELDS)
            or index == own and field_name in WINDOW_FIELDS)


# ---------------------------------------------------------------------------------------------
# Loading


def load_yaml_text(text: str, filename: str) -> Loaded:
    builder = _Builder(filename)
    root = builder.build_document(text)
    if not builder.diagnostics:
        _check_top_level(root, builder)
    loaded = Loaded(filename, builder.value, builder.positions, tuple(builder.places_at_fault))
    if builder.diagnostics:  # a mapping built around the errors can still be validated
        raise SpecError(builder.diagnostics, loaded if isinstance(builder.value, dict) else None)
    return loaded


MAX_SPEC_BYTES = 16 << 20  # a spec of 20,000 layers is 0.6 MB


def load_yaml_file(path: str | Path) -> Loaded:
    return load_yaml_text(read_spec_text(path), str(path))


def read_spec_text(path: str | Path) -> str:
    """A spec file's text: a regular file of UTF-8 text, at most MAX_SPEC_BYTES; a SpecError
    otherwise."""
    filename = str(path)

    def refuse(message: str, line: int = 1, col: int = 1):
        return SpecError([Diagnostic(filename, line, col, "error", "", message)])

    try:
        status = os.stat(path)  # before opening: a FIFO would block, /dev/zero never ends
        if not stat.S_ISREG(status.st_mode):
            raise refuse("not a regular file; a spec is a YAML file")
        if kernel_file(Path(path)):  # "regular" files whose read can block (/proc/kmsg)
            raise refuse("a file of the kernel's (/proc, /sys), not a spec; a spec is a YAML "
                         "file")
        if status.st_size > MAX_SPEC_BYTES:
            raise refuse(f"{status.st_size:,} bytes is more than a spec can be "
                         f"({MAX_SPEC_BYTES >> 20} MiB)")
        data = Path(path).read_bytes()
    except OSError as error:
        raise refuse(f"cannot read file: {error.strerror or error}") from None
    if data.startswith((b"PK\x03\x04", b"\x93NUMPY")):
        raise refuse("a NumPy file (a checkpoint or data), not a spec; give the spec's YAML "
                     "file (or, to a command that takes one, the run directory)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[:error.start].decode("utf-8")  # valid up to the bad byte
        raise refuse(f"byte 0x{data[error.start]:02x} is not UTF-8 text; save the file as "
                     "UTF-8", *_line_and_column(before, len(before))) from None


def _check_top_level(root: Node | None, builder: _Builder) -> None:
    if root is None:
        builder.error(1, 1, (), "the file is empty; expected a mapping of spec fields")
    elif not isinstance(root, MappingNode):
        line, col = _mark(root)
        kind = ("a list" if isinstance(root, SequenceNode)
                else f"the value {_shortened(root.value)!r}")  # a csv given as the spec: its start
        builder.error(line, col, (), f"the top level must be a mapping of spec fields, got {kind}")


def _mark(node: Node) -> tuple[int, int]:
    """Where a node's own text starts: past an anchor that opens it (_CountingLoader)."""
    return _position(getattr(node, "value_mark", node.start_mark))


def _position(mark) -> tuple[int, int]:
    """A mark's line and column, lines split at line feeds and carriage returns only, as
    editors and `grep -n` count them. PyYAML also breaks lines at U+2028, U+2029 and U+0085
    (YAML 1.1's line breaks), and does not count a U+FEFF as a column, where editors count
    one inside a line (a byte-order mark, first in the file, is no column to either): a file
    holding one is counted anew from the mark's offset."""
    if mark.buffer is None or not _has_yaml_11_breaks(mark.buffer):
        return mark.line + 1, mark.column + 1
    before = re.sub(r"\r\n?", "\n", mark.buffer[:mark.index].removeprefix("\ufeff"))
    return before.count("\n") + 1, len(before) - before.rfind("\n")


@functools.lru_cache(maxsize=4)  # one text's nodes ask again and again
def _has_yaml_11_breaks(text: str) -> bool:
    return any(character in text for character in "\u2028\u2029\x85") \
        or "\ufeff" in text[1:]  # a byte-order mark that opens the file is no column anyway


def _lines(text: str) -> list[str]:
    """The text's lines as _position counts them."""
    return re.split(r"\r\n|\r|\n", text)


def _shortened(text: str, most: int = 60) -> str:
    """A value quoted in a message: its start and end, where it is longer than a line."""
    return text if len(text) <= most else f"{text[:most // 2]}...{text[-most // 4:]}"


def _display_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG):] if tag.startswith(_YAML_TAG) else tag


class _TooLarge(Exception):
    def __init__(self, node: Node):
        super().__init__()
        self.node = node  # the first value over the limit


class _CountingLoader(yaml.SafeLoader):
    """Stops composing a document far past _MAX_NODES values: one that large is refused as it
    is read, not after (16 MiB of small mappings take PyYAML a minute and 2 GB to compose).
    Construct counts exactly; here keys are left out, an alias counts once, and a margin of
    twice the limit leaves room for what a merge key (<<) composes and construct does not."""

    def __init__(self, stream):
        super().__init__(stream)
        self.composed = 0
        self._taken: list = []  # the first two tokens the node being parsed took

    def get_token(self):
        token = super().get_token()
        if len(self._taken) < 2:
            self._taken.append(token)
        return token

    def parse_node(self, block=False, indentless_sequence=False):
        """PyYAML starts a node at its anchor (`&u 0` at the &); its value_mark is where the
        value itself is written, which an error about the value points at."""
        self._taken = []
        event = super().parse_node(block, indentless_sequence)
        if self._taken and isinstance(self._taken[0], AnchorToken):
            if len(self._taken) > 1:  # its tag, or its scalar
                event.value_mark = self._taken[1].start_mark
            elif isinstance(event, CollectionStartEvent):  # the { or [, the first key or -
                event.value_mark = self.peek_token().start_mark
        return event

    def compose_node(self, parent, index):
        event = self.peek_event()
        node = super().compose_node(parent, index)
        if isinstance(event, AliasEvent):
            node = _alias_use(node, event.start_mark)
        elif hasattr(event, "value_mark"):
            node.value_mark = event.value_mark
        if not (isinstance(parent, MappingNode) and index is None):  # a key: not a value
            self.composed += 1
        if self.composed > 2 * _MAX_NODES:
            raise _TooLarge(node)
        return node


def _alias_use(anchored: Node, mark) -> Node:
    """The node an alias stands for, placed where the alias is written: errors about a value
    reused there point at the place it was reused. `anchored` is the node itself."""
    style = anchored.style if isinstance(anchored, ScalarNode) else anchored.flow_style
    use = type(anchored)(anchored.tag, anchored.value, mark, mark, style)
    use.anchored = anchored
    return use


# PyYAML's errors when a key's colon is missing or hidden: it notices only on the next line.
KEY_PROBLEMS = ("mapping values are not allowed here", "could not find expected ':'")
# ... or on the next key, which no longer fits what PyYAML reads.
NEXT_KEY_PROBLEMS = ("expected <block end>", "expected '<document start>'")
_SPACES = LOOKALIKE_SPACES
_COLONS = "\uff1a\u2236"  # a full-width colon, a ratio sign
_LOOKALIKE_NAMES = {**{space: character_name(space) for space in _SPACES},
                    "\uff1a": "a full-width colon (U+FF1A)", "\u2236": "a ratio sign (U+2236)"}
_BREAK_NAMES = {"\u2028": "a line separator (U+2028)", "\u2029": "a paragraph separator (U+2029)",
                "\x85": "a next-line character (U+0085)"}
_KEY = r"^(\s*(?:-\s+)?)([A-Za-z_][\w.]*)"
# Where a look-alike breaks the structure: in the indentation, right after a key's colon, or
# as a key's colon. Elsewhere (a quoted path, a name) it is a value's own character.
_LOOKALIKE_SLIPS = (re.compile(f"^[ \t]*([{_SPACES}])"), re.compile(f"{_KEY}:([{_SPACES}])"),
                    re.compile(f"{_KEY}([{_COLONS}])"))
_GLUED_KEY = re.compile(_KEY + r":(?![\s/:])(\S)")
# A dash look-alike or an invisible character where a line's content begins: YAML reads it as
# text
_STRAY_START = re.compile(f"^[ \t]*([{SLIPPED_IN}])")
_GLUED_DASH = re.compile(r"^\s*(-)[{\[A-Za-z_]")
_KEY_WITHOUT_COLON = re.compile(r"^(\s*)([A-Za-z_]\w*)(?:[ \t]+[^\s:#]|[ \t]*(?:#.*)?$)")


def _key_slip(lines: list[str], line: int, key_problem: bool, key_line: int | None,
              next_key_problem: bool = False) -> tuple | None:
    """(line, col, path, message) for the slip behind a syntax error reported at `line`, or
    None when none shows: a look-alike of a space or colon where YAML needs a plain one, on
    that line or the last one with content before it; for a KEY_PROBLEMS error (`key_line`:
    where PyYAML saw the key start) also `key:value` without the space; for those and the
    NEXT_KEY_PROBLEMS, a key without its colon on the line with content before."""
    previous = _content_line_before(lines, line)
    candidates = [n for n in dict.fromkeys((key_line, previous, line - 1, line)) if n]
    for number in candidates:
        text = lines[number - 1] if number <= len(lines) else ""
        hidden_break = re.search("[\u2028\u2029\x85]", text)
        if hidden_break:  # YAML 1.1 breaks the line there: the rest of a comment is read
            return (number, hidden_break.start() + 1, (),
                    f"invalid YAML: {_BREAK_NAMES[hidden_break.group()]} here, which YAML 1.1 "
                    "(as nnrun reads it) takes for a line break; remove it")
        for pattern in _LOOKALIKE_SLIPS:
            slip = pattern.match(text)
            if slip:
                character = slip.group(slip.lastindex)
                plain = "a plain space" if character in _SPACES else "':'"
                return (number, slip.start(slip.lastindex) + 1, (),
                        f"invalid YAML: {_LOOKALIKE_NAMES[character]} here, which YAML does not "
                        f"read as one; write {plain} instead")
        stray = _STRAY_START.match(text)
        if stray:
            return (number, stray.start(1) + 1, (), stray_character_message(text, stray.start(1)))
        dash = _GLUED_DASH.match(text)
        if dash:  # `-{type: dense}` or `-type: dense`: a key (or a text), not a list item
            return (number, dash.end(1), (),
                    "invalid YAML: a list item's '-' is followed by no space, so YAML does not "
                    "read an item here; write '- ' (a dash and a space)")
        glued = _GLUED_KEY.match(text) if key_problem else None
        if glued:
            return _glued_key(glued, text, number)
    if previous and (key_problem or next_key_problem):
        return _missing_colon(lines, previous, line)
    return None


def _tab_message(lines: list[str], line: int, col: int) -> str:
    """PyYAML refuses a tab wherever it would separate tokens, where YAML 1.2 readers (editors)
    accept one: only a tab in the indentation is the indentation's fault."""
    text = lines[line - 1] if line <= len(lines) else ""
    if not text[:col - 1].strip(" \t"):
        return ("invalid YAML: found character '\\t' that cannot start any token; YAML "
                "indents with spaces only: replace the tabs")
    where, fix = (("at the end of the line", "remove it") if not text[col:].strip(" \t")
                  else ("between tokens", "replace it with a space"))
    return (f"invalid YAML: a tab {where}, which PyYAML (the YAML 1.1 reader nnrun uses) "
            f"refuses, though YAML 1.2 editors may accept it; {fix}")


def _list_item_column_above(lines: list[str], line: int, col: int) -> int | None:
    """The column of the list a '- ' at `col` on `line` was meant to continue: of the list
    items above it, back to a line less indented than it, the least indented (a layer's own
    block list, `- 3` under kernel_size:, lies deeper)."""
    columns = []
    for number in range(min(line, len(lines) + 1) - 1, 0, -1):
        text = lines[number - 1]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if _indent(text) < col - 1:
            break  # past the list's start: a key less indented than the item
        if text.lstrip().startswith("- ") and _indent(text) > col - 1:
            columns.append(_indent(text) + 1)
    return min(columns, default=None)


def _lone_first_item(lines: list[str], line: int, col: int, above: int) -> int | None:
    """The line of the list's one item at column `above`, its first, where the '- ' at `col`
    on `line` has a sibling below it at its own column: then the first is out of line."""
    items_above = []
    for number in range(line - 1, 0, -1):
        text = lines[number - 1]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if _indent(text) < col - 1:
            break  # the key the list belongs to
        if text.lstrip().startswith("- ") and _indent(text) + 1 == above:
            items_above.append(number)
    sibling = False  # the next item at `col`, past the lines of the item on `line`
    for number in range(line + 1, len(lines) + 1):
        text = lines[number - 1]
        if not text.strip() or text.lstrip().startswith("#") or _indent(text) > col - 1:
            continue
        sibling = _indent(text) == col - 1 and text.lstrip().startswith("- ")
        break
    if len(items_above) != 1 or not sibling:
        return None
    key = _content_line_before(lines, items_above[0])
    if key and _indent(lines[key - 1]) > col - 1:
        return None  # the items after are left of the list's key: they are out of line
    return items_above[0]


def _first_entry_out_of_line(lines: list[str], line: int, col: int) -> _Placed | None:
    """Where the entry at `line` (a key, or a list item) is the second under its header, and
    the first one, right under the header, is indented otherwise: the first is out of line
    (`model:` then `   input_shape:` then `  layers:`; `layers:` then `  - a` then `    - b`)."""
    first = _content_line_before(lines, line)
    header = _content_line_before(lines, first) if first else None
    if header is None or not _HEADER_LINE.match(lines[header - 1]):
        return None
    depth, first_depth = col - 1, _indent(lines[first - 1])
    header_depth = _indent(lines[header - 1])
    is_item = lines[first - 1].lstrip().startswith("- ")
    if is_item != lines[line - 1].lstrip().startswith("- ") or first_depth == depth:
        return None
    if depth <= header_depth or first_depth < header_depth or (
            first_depth == header_depth and not is_item):
        return None
    if is_item and first_depth > depth:
        return None  # _lone_first_item's, which looks past the item's own lines
    if _entry_at_depth_after(lines, line, header_depth, first_depth, is_item) or (
            _HEADER_LINE.match(lines[line - 1]) and _indent_after(lines, line) < depth):
        return None  # an entry after it lines up with the first (or its own entries do not
        # line up under it): the entry at `line` is the one out of line
    what = "item" if is_item else "key"
    further = "further" if first_depth > depth else "less"
    name = _HEADER_LINE.match(lines[header - 1]).group(2)
    return _Placed(first, first_depth + 1,
                   f"invalid YAML: the first {what} under '{name}:', at {first}:"
                   f"{first_depth + 1}, is indented {further} than the {what}s after it (column "
                   f"{col}); indent it to column {col}, as they are")


@dataclass(frozen=True)
class _Placed:
    """A YAML error's message placed at its cause, where PyYAML stops later (a key out of line
    above the one it stopped at)."""

    line: int
    col: int
    message: str


def _entry_at_depth_after(lines: list[str], line: int, above: int, depth: int,
                          items: bool) -> bool:
    """Whether a key (or, with `items`, a list item) indented by `depth` follows `line`
    before a line indented `above` or less ends the block."""
    for text in lines[line:]:
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if _indent(text) <= above:
            return False
        if _indent(text) == depth and text.lstrip().startswith("- ") == items:
            return True
    return False


def _indent_after(lines: list[str], line: int) -> int:
    after = _content_line_after(lines, line)
    return _indent(lines[after - 1]) if after else 0


def _item_left_of_its_key(lines: list[str], line: int, col: int) -> str | None:
    """A list's first item indented less than its key (`  layers:`, then `- a` at the line's
    start): to the column of the items after it, or under the key."""
    above = _content_line_before(lines, line)
    header = _HEADER_LINE.match(lines[above - 1]) if above else None
    if header is None or len(header.group(1)) <= col - 1:
        return None
    after = _content_line_after(lines, line)
    later = _indent(lines[after - 1]) if after and lines[after - 1].lstrip().startswith(
        "- ") else -1
    column = later + 1 if later >= len(header.group(1)) else len(header.group(1)) + 3
    return (f"invalid YAML: the first item under '{header.group(2)}:', at {line}:{col}, is "
            f"indented less than its key (column {len(header.group(1)) + 1}); indent it to "
            f"column {column}" + (", as the items after it" if later + 1 == column else ""))


def _section_indented(lines: list[str], line: int) -> str | None:
    """A section of the spec's top level (`model:`, `loss: mse`) indented, where the file has
    none at the line's start: the advice to begin it there."""
    key = _KEY_LINE.match(lines[line - 1]) if line <= len(lines) else None
    if key is None or not key.group(1) or "-" in key.group(1) or key.group(2) not in SECTIONS:
        return None
    name = key.group(2)
    if any(re.match(rf"{re.escape(name)}\s*:", text) for text in lines):
        return None
    return (f"'{name}' at {line}:{len(key.group(1)) + 1} is a section of the spec's top level: "
            "begin it at the line's start")


def _block_item_above(lines: list[str], line: int, below: int) -> tuple[int, int | None] | None:
    """(the column of its '-', of its keys: None for a flow item) of the list item above
    `line` whose keys lead up to it: lines indented `below` or more are passed over (deeper
    values), the keys left above it must line up with the item's own. None where another
    line comes first."""
    keys_depth = None
    for number in range(line - 1, 0, -1):
        text = lines[number - 1]
        dash = re.match(r"(\s*)-\s+", text)
        if not text.strip() or text.lstrip().startswith("#") or _indent(text) > below or (
                not dash and _indent(text) == below):
            continue
        if dash:
            block = re.match(r"[^\s:#{\[][^:#]*?:(\s|$)", text[dash.end():])  # a key of it
            own_keys = dash.end() if block else None
            if keys_depth not in (None, own_keys):
                return None
            return len(dash.group(1)) + 1, None if own_keys is None else own_keys + 1
        if keys_depth is not None and _indent(text) != keys_depth:
            return None
        keys_depth = _indent(text)
    return None


def _list_key_missing(lines: list[str], line: int, col: int) -> str | None:
    """A list deeper than the key above it, whose value is on its own line: the list's own
    key is missing (`input_shape: [1, 8, 8]`, then the layers without `layers:`); its name,
    where the section has one list field the spec does not give."""
    above = _content_line_before(lines, line)
    key = _KEY_LINE.match(lines[above - 1]) if above else None
    if key is None or "-" in key.group(1) or _HEADER_LINE.match(lines[above - 1]) \
            or len(key.group(1)) >= col - 1:
        return None
    depth = len(key.group(1))
    section = next((lines[n - 1] for n in range(above - 1, 0, -1)
                    if lines[n - 1].strip() and _indent(lines[n - 1]) < depth), None)
    header = _HEADER_LINE.match(section) if section is not None and depth else None
    given = {match.group(2) for text in lines
             for match in [_KEY_LINE.match(text)] if match and len(match.group(1)) == depth}
    item = lines[line - 1][col - 1:]
    of_mappings = bool(re.match(r"-\s+(\{|[^\s:#\[{][^:#]*?:(\s|$))", item))
    missing = [name for name in list_fields_of(header.group(2), of_mappings)
               if name not in given] if header and not header.group(1) else []
    named = f"'{missing[0]}:'" if len(missing) == 1 else "of the key it belongs to"
    return (f"invalid YAML: a list at {line}:{col} follows '{key.group(2)}', whose value is "
            f"on its line already: the line {named} is missing above the list, indented as "
            f"'{key.group(2)}'")


def _list_under_a_value(lines: list[str], line: int) -> tuple | None:
    """A block list below a key that has a plain value on its own line (`init: he_uniform`,
    then the layers without `layers:`): YAML reads the items as more of that value, up to a
    ': ' of theirs. The list's own key is missing."""
    first = line
    while first > 1 and not lines[first - 1].lstrip().startswith("- "):
        first = _content_line_before(lines, first)
        if first is None:
            return None
    col = _indent(lines[first - 1]) + 1
    if any(text.strip() and not text.lstrip().startswith("#") and _indent(text) < col - 1
           for text in lines[first:line]):  # the list ended before the error's line
        return None
    above = _content_line_before(lines, first)
    key = _KEY_LINE.match(lines[above - 1]) if above else None
    if key is None or _HEADER_LINE.match(lines[above - 1]):
        return None
    missing = _list_key_missing(lines, first, col)
    return (first, col, (), missing) if missing else None


def _block_end_message(error, lines: list[str], line: int, col: int,
                       started: str) -> str | _Placed | None:
    """What does not fit a block (mapping or list) PyYAML was reading: a key or list item
    indented wrongly, or a value where a list item should begin with '- '. None for other
    tokens (a stray '}' or ':'), which PyYAML's own words describe."""
    found = error.problem.split("but found ")[-1]
    block, entries = (("list", "items") if "collection" in (error.context or "")
                      else ("mapping", "keys"))
    indentation = (f"does not fit the {block} started at {started}; line it up with that "
                   f"{block}'s {entries}, or indent it further to belong to one of them (YAML "
                   "nests by indentation, with spaces)")
    section = _section_indented(lines, line)
    if section:
        return f"invalid YAML: {section}"
    out_of_line = _first_entry_out_of_line(lines, line, col)
    if out_of_line:
        return out_of_line
    item = _block_item_above(lines, line, col - 1)
    if found == "'<block sequence start>'":
        if item:  # an item of the list above, shifted past its keys
            return (f"invalid YAML: a list item at {line}:{col} is not lined up with the list's "
                    f"items above it (column {item[0]}); indent it to column {item[0]}")
        key_missing = _list_key_missing(lines, line, col)
        if key_missing:
            return key_missing
    if found in ("'-'", "'<block sequence start>'") and lines[line - 1].lstrip().startswith("-"):
        left = _item_left_of_its_key(lines, line, col)
        if left:
            return left
    if found in ("'<block mapping start>'", "'?'") and block == "list" and item and item[1] \
            and item[0] <= col < item[1]:  # between the item's '-' and its keys
        return (f"invalid YAML: a key at {line}:{col} is not lined up with the keys of the "
                f"list item above it (column {item[1]}); indent it to column {item[1]}")
    if found in ("'<block sequence start>'", "'-'"):  # a '- ' less indented than the items above
        above = _list_item_column_above(lines, line, col)
        first = _lone_first_item(lines, line, col, above) if above is not None else None
        if first is not None:  # the first item is the one out of line
            return (f"invalid YAML: the list's first item, at {first}:{above}, is indented "
                    f"further than the items after it (column {col}); indent it to column "
                    f"{col}, as they are")
        if above is not None:
            return (f"invalid YAML: a list item at {line}:{col} is not lined up with the list's "
                    f"items above it (column {above}); indent it to column {above}")
    if found in ("'-'", "'<block sequence start>'"):
        return f"invalid YAML: a list item at {line}:{col} {indentation}"
    if found == "'<block mapping start>'" and block == "mapping":
        between = _key_between_levels(lines, line, col)
        if between:
            return between
    if found in ("'<block mapping start>'", "'?'"):  # '?': a key where a list item should be
        return f"invalid YAML: a key at {line}:{col} {indentation}"
    before = lines[line - 1][:col - 1].rstrip() if line <= len(lines) else ""
    if found == "'<scalar>'" and before.endswith(("}", "]")):  # `- {type: relu}  x`
        return (f"invalid YAML: text at {line}:{col} after the '{before[-1]}' that closes the "
                "value; remove it, or make it a comment with '#'")
    if block == "list" and found in ("'{'", "'['"):
        return (f"invalid YAML: a value at {line}:{col} in the list started at {started}; "
                "begin each item with '- '")
    if found in ("'{'", "'['"):  # `layers:` then `{type: flatten}` lines without their dashes
        return (f"invalid YAML: a value at {line}:{col} after another one, where the mapping "
                f"started at {started} takes a key; for a list, begin each item with '- '")
    return None


def _key_between_levels(lines: list[str], line: int, col: int) -> str | None:
    """A key indented less than the keys just above it, and than those after it: it is
    theirs, short of their column (` momentum:` among `  lr:` and `  weight_decay:`)."""
    above = _content_line_before(lines, line)
    after = _content_line_after(lines, line)
    if not (above and after):
        return None
    before, following = _KEY_LINE.match(lines[above - 1]), _KEY_LINE.match(lines[after - 1])
    if not (before and following) or "-" in before.group(1) + following.group(1):
        return None
    depth = len(before.group(1))
    if not col - 1 < depth == len(following.group(1)) or _HEADER_LINE.match(lines[line - 1]):
        return None  # a section's key, whose own keys may follow it: not one of theirs
    name = _KEY_LINE.match(lines[line - 1])
    key = f"'{name.group(2)}'" if name else "it"
    return (f"invalid YAML: a key at {line}:{col} is indented less than the keys around it "
            f"('{before.group(2)}' on line {above}, '{following.group(2)}' on line {after}); "
            f"{_indent_words(depth, key)}, as they are")


def _mapping_value_hint(lines: list[str], line: int) -> tuple[str, tuple | None]:
    """A ': ' that PyYAML found inside a value: a key indented deeper than the key above it
    (read as more of that key's value), or a value holding ': ' unquoted. With the place of
    the key out of line, where that is the one above (None: where PyYAML stopped)."""
    previous = _content_line_before(lines, line)
    text = lines[line - 1] if line <= len(lines) else ""
    key = _KEY_LINE.match(text)
    above = re.match(r"(\s*(?:-\s+)*)([^\s:#][^:#]*?):\s+\S", lines[previous - 1]) \
        if previous else None
    if key and above and len(key.group(1)) > len(above.group(1)):
        hint, above_out_of_line = _deeper_key_hint(lines, key, above, previous, line)
        return hint, (previous, len(above.group(1)) + 1) if above_out_of_line else None
    value = re.match(r"\s*(?:-\s+)*([^\s:#][^:#]*?):\s+(.*?)\s*(#.*)?$", text)
    if value and ": " in value.group(2) and not value.group(2).startswith(("'", '"')):
        quoted = value.group(2).replace("'", "''")
        return f"; a value that holds ': ' must be quoted: {value.group(1)}: '{quoted}'", None
    return "", None


_KEY_LINE = re.compile(r"(\s*(?:-\s+)*)([^\s:#][^:#]*?):(\s|$)")
_HEADER_LINE = re.compile(r"(\s*)([^\s:#][^:#]*?):\s*(#.*)?$")  # a key whose value is below


def _indented_first_key(lines: list[str], error: yaml.MarkedYAMLError) -> tuple | None:
    """A document whose first key is indented: a key at the line's start later ends it
    (PyYAML: "expected '<document start>'"), where the slip is the first line's."""
    if not (error.problem or "").startswith("expected '<document start>'"):
        return None
    number = next((n for n in range(1, len(lines) + 1) if lines[n - 1].strip()
                   and not lines[n - 1].lstrip().startswith(("#", "%", "---"))), None)
    key = _KEY_LINE.match(lines[number - 1]) if number else None
    if key is None or not key.group(1) or "-" in key.group(1):
        return None
    depth = len(key.group(1))
    return (number, depth + 1, (),
            f"invalid YAML: the first key, '{key.group(2)}', is indented by {depth} spaces, so "
            "the keys at the line's start after it cannot follow it; begin every top-level key "
            "at the line's start")


def _deeper_key_hint(lines: list[str], key: re.Match, above: re.Match, previous: int,
                     line: int) -> tuple[str, bool]:
    """A key indented deeper than the key with a value above it: that key dedented among
    keys as deep as this one (the first under its section, too), a section's line deleted
    above this one (`data:`), or this key indented too far. With whether the key above is
    the one out of line."""
    if "-" in key.group(1):  # a list item's key: its indent is not the key's alone
        return "", False
    section = _section_indented(lines, line)
    if section:
        return f"; {section}", False
    name, depth, shallower = key.group(2), len(key.group(1)), above.group(2)
    reads = f"so YAML reads '{name}' as more of its value"
    earlier = _content_line_before(lines, previous)
    sibling = _KEY_LINE.match(lines[earlier - 1]) if earlier else None
    if sibling and len(sibling.group(1)) == depth:  # `epochs: 2`, `batch_size: 8`, `shuffle`
        return (f"; '{shallower}' on line {previous} is indented less than the keys around it "
                f"('{sibling.group(2)}' on line {earlier}, '{name}' on line {line}), {reads}: "
                f"{_indent_words(depth, repr(shallower))}, as they are"), True
    header = _HEADER_LINE.match(lines[earlier - 1]) if earlier else None
    after = _content_line_after(lines, line)
    if header and len(header.group(1)) < len(above.group(1)) and after and \
            _indent(lines[after - 1]) == depth:  # `data:`, ` dataset:`, `  n_samples:`, ...
        return (f"; the first key under '{header.group(2)}:', '{shallower}' on line "
                f"{previous}, is indented less than the keys after it ('{name}' on line {line}), "
                f"{reads}: {_indent_words(depth, repr(shallower))}, as they are"), True
    if header and len(header.group(1)) == len(above.group(1)):  # `data:`, `dataset:` dedented
        return (f"; '{shallower}' on line {previous} is indented as '{header.group(2)}:' above "
                f"it is, not as the keys under it ('{name}' on line {line}), {reads}: "
                f"{_indent_words(depth, repr(shallower))}, as '{name}' is"), True
    # the section of the first of these keys that one section has (`type` is many's, `lr`
    # the optimizer's)
    field_path = next(filter(None, map(spec_field_path, _keys_from(lines, line, depth))), None) \
        if not above.group(1) else None
    section = field_path.rsplit(".", 1)[0] if field_path and "." in field_path else None
    present = any(re.match(rf"{re.escape(str(section))}\s*:", text) for text in lines)
    if section and "." not in section and section != shallower and not present:
        return (f"; '{name}' is indented deeper than '{shallower}' on line {previous}, {reads}: "
                f"if it is {section}'s, the line '{section}:' is missing above it; else "
                f"{_indent_words(0, 'it')}, as '{shallower}'"), False
    return (f"; '{name}' is indented deeper than '{shallower}' on line {previous}, {reads}: "
            f"{_indent_words(len(above.group(1)), 'it')}, as '{shallower}'"), False


def _indent_words(spaces: int, what: str) -> str:
    if not spaces:
        return f"begin {what} at the line's start"
    return f"indent {what} to column {spaces + 1}"


def _keys_from(lines: list[str], line: int, depth: int) -> list[str]:
    """The keys at `depth` from `line` on, to a line indented less (deeper lines are their
    values')."""
    keys = []
    for text in lines[line - 1:]:
        if not text.strip() or text.lstrip().startswith("#") or _indent(text) > depth:
            continue
        key = _KEY_LINE.match(text)
        if _indent(text) < depth or key is None or "-" in key.group(1):
            break
        keys.append(key.group(2))
    return keys


def _content_line_after(lines: list[str], line: int) -> int | None:
    """The first line after `line` that holds more than a comment."""
    for number in range(line + 1, len(lines) + 1):
        if lines[number - 1].strip() and not lines[number - 1].lstrip().startswith("#"):
            return number
    return None


def _content_line_before(lines: list[str], line: int) -> int | None:
    """The last line before `line` that holds more than a comment."""
    for number in range(min(line, len(lines) + 1) - 1, 0, -1):
        if lines[number - 1].strip() and not lines[number - 1].lstrip().startswith("#"):
            return number
    return None


def stray_character_message(text: str, at: int) -> str:
    """A look-alike dash or an invisible character at `at`: named, with what to write."""
    character, name = text[at], character_name(text[at])
    if character.isspace() or unicodedata.category(character) == "Cf" or \
            text[at + 1:at + 2] == "-":
        return f"invalid YAML: {name} here, which YAML reads as text; remove it"
    return (f"invalid YAML: {name} here, which YAML does not read as a list item's '-'; "
            "write '-' instead")


def _glued_key(glued: re.Match, text: str, number: int) -> tuple:
    key, rest = glued.group(2), text[glued.end(2) + 1:].split("#")[0].strip()
    if re.match(r"[A-Za-z_][\w.]*:(\s|$)", rest):  # `data:dataset: xor`: two lines joined
        return (number, glued.end(2) + 2, (),
                f"invalid YAML: a line break is missing after '{key}:'; YAML reads "
                f"{quoted(key + ':' + rest.split(':')[0])} as one key")
    if re.match(f"[{SLIPPED_IN}]", rest):  # `early_stopping:–{...}`: where the space goes
        return (number, glued.end(2) + 2, (),
                f"invalid YAML: '{key}:' is followed by {character_name(rest[0])} where YAML "
                f"needs a space; write '{key}: {_shortened(rest[1:].lstrip())}'")
    return (number, glued.end(2) + 1, (),
            f"invalid YAML: '{key}:' is followed by no space, so YAML reads "
            f"{quoted(key + ':' + rest)} as one string; write '{key}: ...'")


def _missing_colon(lines: list[str], previous: int, line: int) -> tuple | None:
    """A key without its colon on line `previous`, the error being reported at `line`: a
    line that is neither a list item nor the next line of the value above it."""
    text = lines[previous - 1]
    missing = _KEY_WITHOUT_COLON.match(text)
    if not missing or ":" in text.split("#")[0] or text.lstrip().startswith("- "):
        return None
    above = _content_line_before(lines, previous)
    if above and _indent(lines[above - 1]) < _indent(text) \
            and not lines[above - 1].split("#")[0].rstrip().endswith(":"):
        return None  # deeper than a key with its value: the value's next line, not a key
    key = missing.group(2)
    advice = f"invalid YAML: a ':' is missing after '{key}'; write '{key}: ...'"
    if above and "#" in lines[above - 1] and missing.end(2) < len(text.rstrip()):
        advice += ", or, if the line continues the comment above it, begin it with '#'"
    return previous, missing.end(2) + 1, (), advice


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


class _Builder:
    """Constructs plain values from a composed node graph, recording positions and problems."""

    def __init__(self, filename: str, fixed_position: Position | None = None):
        self.filename = filename
        # For `--set` values every node reports the argument instead of its place in the text.
        self.fixed_position = fixed_position
        self.positions: dict[SpecPath, NodePositions] = {}
        self.diagnostics: list[Diagnostic] = []
        self.value: Any = None
        self._constructor = SafeConstructor()
        self._node_count = 0
        self._distinct: set[int] = set()  # fewer than counted: aliases used
        self._active: set[int] = set()
        # Inside a value an alias reuses: the alias's position, where every path in it is placed.
        self._reused: Position | None = None
        self._refused: set[int] = set()  # the nodes whose values were refused, by id
        self.places_at_fault: list[SpecPath] = []  # the paths of the errors

    def error(self, line: int, col: int, path: SpecPath, message: str,
              at_fault: SpecPath | None = None) -> None:
        """`at_fault`: the value the error leaves unsure, where it is not `path`'s."""
        if self.fixed_position is not None:
            line, col = self.fixed_position.line, self.fixed_position.col
        where = self.fixed_position.origin if self.fixed_position else format_path(path)
        self.places_at_fault.append(tuple(path if at_fault is None else at_fault))
        # a value an alias or a merge key uses again is said once, where it is: SpecError's
        # diagnostics.distinct drops the repeats
        self.diagnostics.append(Diagnostic(self.filename, line, col, "error", where, message))

    def _refuse(self, node: Node, path: SpecPath, message: str) -> None:
        self.error(*_mark(node), path, message)
        self._refused.add(id(node))

    def build_document(self, text: str) -> Node | None:
        root = self._compose(text)
        if root is None:
            return None
        try:
            self.value = self.construct(root, (), None)
        except _TooLarge as too_large:
            self.error(*_mark(too_large.node), (), self._too_large_message())
        except RecursionError:
            self.error(*_mark(_deepest(root)), (), NESTED_TOO_DEEPLY)
        return root

    def _compose(self, text: str) -> Node | None:
        loader = None  # yaml.compose's own steps, keeping where the reader stopped
        try:
            loader = _CountingLoader(text)
            return loader.get_single_node()
        except _TooLarge as too_large:  # stopped at twice the limit: not the first one past it
            self.error(*_mark(too_large.node), (), self._too_large_message(
                f"reading stopped here, at {2 * _MAX_NODES:,}"))
        except yaml.MarkedYAMLError as error:
            self._syntax_error(error, text)
        except yaml.reader.ReaderError as error:
            line, col = _line_and_column(text, error.position)
            message = f"invalid YAML: character {error.character!r}: {error.reason}"
            self.error(line, col, (), message)
        except yaml.YAMLError as error:
            self.error(1, 1, (), f"invalid YAML: {error}")
        except RecursionError:
            self.error(*_position(loader.get_mark()), (), f"invalid YAML: {NESTED_TOO_DEEPLY}")
        finally:
            if loader is not None:
                loader.dispose()
        return None

    def _syntax_error(self, error: yaml.MarkedYAMLError, text: str) -> None:
        mark = error.problem_mark or error.context_mark
        line, col = _position(mark) if mark else (1, 1)
        if error.problem == "but found another document":
            self.error(line, col, (), "a spec is one YAML document, and this '---' starts "
                       "another; remove it and what follows, or give each spec its own file")
            return
        start = error.context_mark
        started = "{}:{}".format(*_position(start)) if start else ""
        key_problem = error.problem in KEY_PROBLEMS
        key_line = _position(start)[0] if key_problem and start else None
        next_key_problem = (error.problem or "").startswith(NEXT_KEY_PROBLEMS)
        slip = _key_slip(_lines(text), line, key_problem, key_line, next_key_problem)
        if slip:  # where PyYAML stops, often lines late, says nothing of the cause
            self.error(*slip)
            return
        first = _indented_first_key(_lines(text), error)
        if first:
            self.error(*first)
            return
        if (error.context or "").startswith("while scanning a quoted scalar") and start \
                and error.problem == "found unexpected end of stream":
            quote = error.context_mark.buffer[error.context_mark.pointer] \
                if error.context_mark.buffer else '"'
            self.error(*_position(start), (), f"invalid YAML: the {quote} at {started} is never "
                       f"closed (YAML reads on to {line}:{col}, the end of the file); close "
                       "it where the value ends")
            return
        message = f"invalid YAML: {error.problem or error.context}"
        if error.context and error.problem and start:
            message += f" ({error.context} started at {started})"
        if "'\\t'" in message:
            message = _tab_message(_lines(text), line, col)
        elif (error.problem or "").startswith("expected <block end>") and start:
            ended = _block_end_message(error, _lines(text), line, col, started)
            if isinstance(ended, _Placed):
                self.error(ended.line, ended.col, (), ended.message)
                return
            message = ended or message
        elif (error.problem or "").startswith("mapping values are not allowed"):
            under_value = _list_under_a_value(_lines(text), line)
            if under_value:
                self.error(*under_value)
                return
            hint, place = _mapping_value_hint(_lines(text), line)
            message += hint
            line, col = place or (line, col)
        elif (error.context or "").endswith(("flow mapping", "flow sequence")) and start:
            bracket = "{" if error.context.endswith("mapping") else "["
            message += (f"; the {bracket} at {started} is not closed, or a ',' is missing "
                        "between its entries")
        self.error(line, col, (), message)

    # -- construction -------------------------------------------------------------------------

    def construct(self, node: Node, path: SpecPath, key_node: Node | None) -> Any:
        written = getattr(node, "anchored", node)  # an alias's value, where its anchor is
        self._count_node(node, written)
        self._record(path, node, key_node)
        if id(written) in self._active:
            self.error(*_mark(node), path, "an alias refers to a value that contains it")
            return None
        # a tag or scalar refused is refused in the text: once, where it is written
        value = self._construct_written(node, written, path) \
            if self._tag_allowed(written, path) else None
        if id(written) in self._refused:
            self._place_where_written(path, written)
        return value

    def _construct_written(self, node: Node, written: Node, path: SpecPath) -> Any:
        """The value of `written`: `node`, or the node the alias `node` stands for, every path
        inside which is placed at the alias."""
        self._active.add(id(written))
        outer = self._reused
        if written is not node and outer is None:
            self._reused = self.positions[path].value
        try:
            return self._construct_by_kind(written, path)
        finally:
            self._active.discard(id(written))
            self._reused = outer

    def _place_where_written(self, path: SpecPath, written: Node) -> None:
        """A refused value (an alias may reuse it): placed where it is written, as its error
        is, so that the schema does not report its None again at the alias."""
        if self.fixed_position is None:
            here = Position(self.filename, *_mark(written))
            self.positions[path] = NodePositions(here, self.positions[path].key)

    def _construct_by_kind(self, node: Node, path: SpecPath) -> Any:
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            items = enumerate(node.value)
            return [self.construct(item, path + (index,), None) for index, item in items]
        value = self._scalar(node, path)
        if _read_apart(node, value):
            self._refuse(node, path, _readings_message(node.value, value))
            return None
        return value

    def _count_node(self, node: Node, written: Node) -> None:
        self._node_count += 1
        self._distinct.add(id(written))
        if self._node_count > _MAX_NODES:
            raise _TooLarge(node)

    def _too_large_message(self, where: str = "the first one past that is here") -> str:
        if len(self._distinct) < self._node_count:
            return (f"aliases expand to more than {_MAX_NODES:,} values (each use of an alias "
                    "counts its whole value); a spec is never this large")
        return (f"the document holds more than {_MAX_NODES:,} values (each number, text, list "
                f"and mapping counts one; {where}), more than nnrun reads in a spec (large "
                "initial values go in an .npz file, with init_from)")

    def _record(self, path: SpecPath, node: Node, key_node: Node | None) -> None:
        if self.fixed_position is not None:
            self.positions[path] = NodePositions(self.fixed_position, self.fixed_position)
            return
        if self._reused is not None:
            self.positions[path] = NodePositions(self._reused, self._reused)
            return
        value = Position(self.filename, *_mark(node))
        key = Position(self.filename, *_mark(key_node)) if key_node is not None else None
        self.positions[path] = NodePositions(value, key)

    def _tag_allowed(self, node: Node, path: SpecPath) -> bool:
        expected = {MappingNode: {_MAPPING_TAG}, SequenceNode: {_SEQUENCE_TAG}}
        allowed = expected.get(type(node), _SCALAR_TAGS)
        if node.tag in allowed:
            return True
        tag = _display_tag(node.tag)
        if tag.startswith("!!python/"):
            message = f"tag '{tag}' is not allowed: specs never build Python objects"
        elif tag == "!!binary":
            message = "no spec field takes binary data (!!binary); write the value as text"
        elif tag == "!!value" and isinstance(node, ScalarNode) and node.value == "=":
            message = (f"a plain {node.value} is YAML 1.1's value key (!!value), no text; "
                       f"write it in quotes: '{node.value}'")
        else:
            message = f"unsupported YAML tag '{tag}' here"
        self._refuse(node, path, message)
        return False

    def _scalar(self, node: ScalarNode, path: SpecPath) -> Any:
        construct = self._constructor.yaml_constructors[node.tag]
        try:
            value = construct(self._constructor, node)
        # PyYAML raises assorted exceptions (ValueError, KeyError, binascii.Error) for scalars whose
        # explicit or implied tag does not fit their text, e.g. `2001-13-45` or `!!int abc`.
        except Exception as error:
            why = (f"{len(node.value):,} digits, far more than any setting takes"
                   if "integer string conversion" in str(error) else error)  # Python's limit
            message = f"cannot read {_shortened(node.value)!r} as {_display_tag(node.tag)}: {why}"
            self._refuse(node, path, message)
            return None
        if beyond_decimal_text(value):  # 0x..., 0o... or 1:2:3 past the limit of decimal digits
            digits = decimal_digits(value)
            self._refuse(node, path, f"cannot read {_shortened(node.value)!r} as "
                         f"{_display_tag(node.tag)}: about {digits:,} digits, far more than any "
                         "setting takes")
            return None
        surrogate = _lone_surrogate(value)
        if surrogate is not None:
            self._refuse(node, path, _SURROGATE_MESSAGE.format(f"\\u{ord(surrogate):04x}"))
            # kept, marked, so that the schema does not also report the value as missing
            return _SURROGATES.sub("\ufffd", value)
        return value

    def _mapping(self, node: MappingNode, path: SpecPath) -> dict:
        result: dict = {}
        first_keys: dict[Hashable, Node] = {}
        explicit, merged = self._entries(node, path)
        for key_node, value_node in explicit:
            key = self._key(key_node, path)
            if key is _INVALID_KEY:
                continue
            if key in first_keys:
                self._duplicate(key, key_node, first_keys[key], path)
                continue
            first_keys[key] = key_node
            result[key] = self.construct(value_node, path + (key,), key_node)
        self._add_merged(result, merged, path)
        return result

    def _duplicate(self, key: Hashable, key_node: Node, first: Node, path: SpecPath) -> None:
        first_line, _ = _mark(first)
        self.error(*_mark(key_node), path, f"duplicate key {key!r} (first at line {first_line})",
                   at_fault=(*path, key))

    def _add_merged(self, result: dict, merged: list[tuple[Node, Node]], path: SpecPath) -> None:
        # `<<: *defaults` fills in keys the mapping does not set itself; earlier sources win.
        for key_node, value_node in merged:
            key = self._key(key_node, path)
            if key is not _INVALID_KEY and key not in result:
                result[key] = self.construct(value_node, path + (key,), key_node)

    def _entries(self, node: MappingNode, path: SpecPath) -> tuple[list, list]:
        explicit, merged, merge_key = [], [], None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG and merge_key is not None:  # PyYAML: the last wins
                self._duplicate("<<", key_node, merge_key, path)
            elif key_node.tag == _MERGE_TAG:
                merge_key = key_node
                merged.extend(self._merge_sources(value_node, path))
            else:
                explicit.append((key_node, value_node))
        return explicit, merged

    def _merge_sources(self, node: Node, path: SpecPath) -> list[tuple[Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        entries = []
        for source in sources:
            if not isinstance(source, MappingNode):
                message = "'<<' (merge) needs a mapping or a list of mappings"
                self.error(*_mark(source), path, message)
                continue
            explicit, merged = self._entries(source, path)
            entries.extend(explicit + merged)
        return entries

    def _key(self, key_node: Node, path: SpecPath) -> Any:
        if not self._tag_allowed(key_node, path):
            return _INVALID_KEY
        if not isinstance(key_node, ScalarNode):
            message = "mapping keys must be plain scalars, not lists or mappings"
            self.error(*_mark(key_node), path, message)
            return _INVALID_KEY
        key = self._scalar(key_node, path)
        if key is None and key_node.tag != _YAML_TAG + "null":
            return _INVALID_KEY  # unreadable; _scalar said why
        if not isinstance(key, str):
            # Every key of a spec is a field name; `~`, `1` or `yes` as a key is a slip.
            message = f"keys must be names; got {_yaml_text(key)}"
            if _read_apart(key_node, key):
                message += f" ({key_node.value} to YAML 1.1): write {key_node.value!r} in quotes"
            self.error(*_mark(key_node), path, message)
            return _INVALID_KEY
        return key


# YAML's "\ud83d\ude00" is two halves of a UTF-16 pair, which no UTF-8 file, file name or
# terminal can hold: refused here, where the position is known, instead of failing on output.
_SURROGATE_MESSAGE = ("{} is half of a UTF-16 surrogate pair, not a character; write the "
                      "character itself, or its \\U escape (\\U0001F600 for a smiling face)")


_SURROGATES = re.compile("[\ud800-\udfff]")


def decimal_digits(value: int) -> int:
    """About how many decimal digits an integer has, without writing it out."""
    return int(value.bit_length() * math.log10(2)) + 1


def beyond_decimal_text(value: Any) -> bool:
    """An integer too long for Python to write in decimal (which json and error messages do):
    a hexadecimal, octal or sexagesimal one is read without the limit decimal digits have."""
    limit = sys.get_int_max_str_digits()
    return (isinstance(value, int) and limit > 0
            and value.bit_length() * math.log10(2) >= limit - 1)


# PyYAML reads YAML 1.1; editors' language servers (and so `nnrun schema` in them) read YAML 1.2,
# whose core schema reads a few plain scalars otherwise: `yes`, `on` (true to 1.1, text to 1.2),
# `010` (8 to 1.1, 10 to 1.2), `1:30`, `1_000`, `0b11` (numbers to 1.1 only). Refused, so that a
# spec means the same to both.
_CORE_BOOLS = {text: text.lower() == "true" for text in ("true", "True", "TRUE", "false", "False",
                                                          "FALSE")}
_CORE_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_CORE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
                         r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


def _core_schema_value(text: str) -> Any:
    """A plain scalar as YAML 1.2's core schema reads it (nulls and the text aside)."""
    if text in _CORE_BOOLS:
        return _CORE_BOOLS[text]
    if _CORE_INT.fullmatch(text):
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
    if _CORE_FLOAT.fullmatch(text):
        return float(text)
    return text


def _read_apart(node: ScalarNode, value: Any) -> bool:
    """A plain scalar YAML 1.1 (`value`) and 1.2 read otherwise. The cheap type test first:
    most values are text, and resolving a tag again is a regular expression a value."""
    return _readings_differ(node.value, value) and _read_by_its_text(node)


def _read_by_its_text(node: ScalarNode) -> bool:
    """A plain scalar whose tag is the one its text resolves to (an explicit `!!float 1` is
    1.0 to both versions)."""
    return node.style is None and node.tag == _RESOLVER.resolve(ScalarNode, node.value,
                                                                (True, False))


_RESOLVER = yaml.resolver.Resolver()  # PyYAML's YAML 1.1 reading of a plain scalar's tag


def _readings_differ(text: str, value: Any) -> bool:
    if not isinstance(value, (bool, int, float)):
        return False  # text and null read alike; `5e-4` (text to 1.1) is the schema's concern
    try:
        core = _core_schema_value(text)
    except ValueError:  # more digits than Python converts; refused as such elsewhere
        return False
    if isinstance(value, float) and isinstance(core, float) and math.isnan(value):
        return not math.isnan(core)
    return type(core) is not type(value) or core != value


def _readings_message(text: str, value: Any) -> str:
    core = _core_schema_value(text)
    shown = _yaml_text(value)
    if isinstance(value, bool):
        return (f"{text} is {shown} to YAML 1.1 (PyYAML, nnrun) but text to YAML 1.2 (editors); "
                f"write {shown} for the yes/no value, or {text!r} in quotes for the text")
    if isinstance(core, str):
        how = ("base 60" if ":" in text else "digits grouped with _" if "_" in text
               else "binary" if "0b" in text else "a signed hexadecimal number")
        return (f"{text} is {shown} to YAML 1.1 ({how}) but text to YAML 1.2 (editors); write "
                f"{shown}, or {text!r} in quotes for the text")
    return (f"{text} is {shown} to YAML 1.1 (a leading 0 makes it octal) but {core} to YAML 1.2 "
            f"(editors); write {shown} or {core} without the leading 0")


NESTED_TOO_DEEPLY = "the document is nested too deeply here (a spec nests a few levels)"


def _deepest(root: Node) -> Node:
    """The first of the most deeply nested nodes (walked without recursion: the document is
    nested past Python's own limit)."""
    deepest, most = root, 0
    waiting, seen = [(root, 0)], set()
    while waiting:
        node, depth = waiting.pop()
        if id(node) in seen:  # an alias's node, met again (or within itself)
            continue
        seen.add(id(node))
        if depth > most:
            deepest, most = node, depth
        if isinstance(node, SequenceNode):
            waiting.extend((child, depth + 1) for child in reversed(node.value))
        elif isinstance(node, MappingNode):
            waiting.extend((child, depth + 1) for pair in reversed(node.value)
                           for child in reversed(pair))
    return deepest


def _lone_surrogate(value: Any) -> str | None:
    found = _SURROGATES.search(value) if isinstance(value, str) else None
    return found.group() if found else None


def surrogate_problem(text: Any) -> str | None:
    """Why text holding a lone surrogate (a byte that is not UTF-8, as os.fsdecode keeps it)
    cannot be in a spec, whose run's spec.yaml could then never be read back; else None."""
    surrogate = _lone_surrogate(text)
    return None if surrogate is None else _SURROGATE_MESSAGE.format(f"\\u{ord(surrogate):04x}")


def _yaml_text(value: Any) -> str:
    """A scalar as YAML writes it: null, true, 1.5 (Python would say None, True)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


_INVALID_KEY = object()


def _line_and_column(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


# ---------------------------------------------------------------------------------------------
# Overrides: `--set PATH=VALUE`


class _OverrideError(Exception):
    pass


_PATH_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
_PATH_PATTERN = re.compile(rf"{_PATH_KEY}(\[-?\d+\])*(\.{_PATH_KEY}(\[-?\d+\])*)*")
_PATH_TOKEN = re.compile(rf"({_PATH_KEY})|\[(-?\d+)\]")
# Deeper than any field of the schema (model.layers[0].init.value is 5 parts), well short of
# the nesting that would exhaust Python's recursion in the checks that copy the spec.
_LONGEST_PATH = 64


class OptionSetting(str):
    """A --set argument that a command's option stands for (`train --epochs 3`): messages, and
    the command that starts the run again, say the option as it was typed."""
    option: str

    def __new__(cls, argument: str, option: str):
        setting = super().__new__(cls, argument)
        setting.option = option
        return setting

    def __getnewargs__(self) -> tuple[str, str]:  # copies and pickles keep the option
        return str(self), self.option


def training_overrides(overrides=(), epochs=None, batch_size=None, seed=None,
                       typed: bool = False) -> list[str]:
    """`overrides` (a list, or one `--set` argument as a string) and `train`'s `--epochs`,
    `--batch-size` and `--seed` (the API's arguments of those names) as `--set` arguments;
    `typed`: the command line's options, said as typed."""
    chosen = {"train.epochs": (epochs, "--epochs"), "train.batch_size": (batch_size,
                                                                        "--batch-size"),
              "seed": (seed, "--seed")}
    return [*override_list(overrides),
            *(OptionSetting(f"{key}={value}", f"{option} {value}") if typed else f"{key}={value}"
              for key, (value, option) in chosen.items() if value is not None)]


def override_list(overrides) -> list[str]:
    """The API's `overrides`: one `--set` argument as a string, a list of them, or a mapping
    of paths to values ({"train.epochs": 1}), each value written as `--set` would take it."""
    if overrides is None:
        return []
    if isinstance(overrides, str):  # one argument, not its characters
        return [overrides]
    if isinstance(overrides, Mapping) and all(isinstance(path, str) for path in overrides):
        return [f"{path}={_override_value(value)}" for path, value in overrides.items()]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise TypeError("overrides must be 'path=value' strings, as --set takes (a list of "
                        "them, or one), or a mapping of paths to values, got "
                        f"{overrides!r}")
    return list(overrides)


def _override_value(value) -> str:
    """A Python value as `--set` takes it, in JSON, which YAML reads as that value: a string
    stays the string (`"run #2"`, not YAML's `run` before a comment), as it does inside a
    dict; NumPy's numbers and arrays as Python's."""
    return json.dumps(value, default=lambda item: item.tolist() if hasattr(item, "tolist")
                      else str(item))


def apply_overrides(loaded: Loaded, overrides: list[str]) -> Loaded:
    """The spec with each `--set PATH=VALUE` applied. Errors are raised together, with the spec
    as the arguments that worked made it (SpecError.partial)."""
    data = copy.deepcopy(loaded.data)
    positions = dict(loaded.positions)
    diagnostics: list[Diagnostic] = []
    # numbered after the arguments the spec holds already (the API's overrides of a loaded
    # spec): Loaded.overrides_in_order replays them by these numbers
    first = 1 + max((node.value.line for node in positions.values() if node.value.origin),
                    default=0)
    for number, argument in enumerate(overrides, start=first):
        diagnostics += _apply_override(data, positions, number, argument)
    result = Loaded(loaded.filename, data, positions, loaded.set_aside)
    if diagnostics:
        raise SpecError(diagnostics, result)
    return result


def _apply_override(data: dict, positions: dict, number: int, argument: str) -> list[Diagnostic]:
    """Applies one argument, or nothing of it (its diagnostics)."""
    origin = getattr(argument, "option", None) or f"{OVERRIDE_FILE} {argument}"
    position = Position(OVERRIDE_FILE, number, 1, origin)
    trial, trial_positions = copy.deepcopy(data), dict(positions)
    try:
        path, value = _parse_override(argument, position)
        _assign(trial, trial_positions, path, value, position)
    except _OverrideError as error:
        return [Diagnostic(OVERRIDE_FILE, number, 1, "error", origin, str(error))]
    except SpecError as error:
        return error.diagnostics
    data.clear()
    data.update(trial)
    positions.clear()
    positions.update(trial_positions)
    return []


def _parse_override(argument: str, position: Position) -> tuple[SpecPath, Any]:
    if re.search("[\udc80-\udcff]", argument):  # bytes the locale could not decode
        raise _OverrideError(_undecoded_bytes())
    path_text, equals, value_text = argument.partition("=")
    if not equals:
        raise _OverrideError("expected PATH=VALUE, e.g. optimizer.lr=0.01")
    path_text = path_text.strip()
    if not _PATH_PATTERN.fullmatch(path_text):
        example = "model.layers[0].filters"
        raise _OverrideError(f"cannot read the path {path_text!r}; expected a path like {example}")
    try:
        path = tuple(
            key if key else int(index) for key, index in _PATH_TOKEN.findall(path_text)
        )
    except ValueError:  # an index of more digits than Python converts
        raise _OverrideError("a list index of thousands of digits is past any list's length; "
                             "check the path against nnrun schema") from None
    if len(path) > _LONGEST_PATH:
        raise _OverrideError(f"the path has {len(path):,} parts, more than any spec field's (a "
                             f"few, {_LONGEST_PATH} at most); check it against nnrun schema")
    return path, _parse_value(value_text, position)


def _undecoded_bytes() -> str:
    """What a --set argument holding bytes the locale's encoding could not decode gets (YAML
    would call them special characters)."""
    encoding = sys.getfilesystemencoding()
    if codecs.lookup(encoding).name == "utf-8":
        return "holds bytes that are not UTF-8; give the value as UTF-8 text"
    return f"holds text this locale's encoding ({encoding}) cannot read; {IN_UTF8}"


def _parse_value(text: str, position: Position) -> Any:
    builder = _Builder(OVERRIDE_FILE, fixed_position=position)
    builder.build_document(text)
    if builder.diagnostics:
        raise SpecError(builder.diagnostics)
    return builder.value


def _assign(data: dict, positions: dict, path: SpecPath, value: Any, position: Position) -> None:
    container, walked = data, ()
    for component, following in zip(path[:-1], path[1:]):
        component = _from_the_start(container, component)
        if isinstance(following, int) and isinstance(container, dict) \
                and component not in container:
            raise _OverrideError(_no_such_list(container, walked, component))
        if isinstance(following, str):
            _expand_short_form(container, walked, component, positions)
        container = _child(container, walked, component, positions, position)
        walked += (component,)
    last = _from_the_start(container, path[-1])
    _check_target(container, walked, last)
    if last == "type" and isinstance(container, dict):
        _drop_the_old_types_defaults(container, walked, value)
    container[last] = value
    _replace_positions(positions, (*walked, last), value, position)


def _drop_the_old_types_defaults(container: dict, walked: SpecPath, new_type: Any) -> None:
    """`--set optimizer.type=adam` on a resolved spec (a run's spec.yaml, which writes every
    field out): the old type's fields the new one lacks, at their defaults (`momentum: 0.0`,
    `nesterov: false`), were nnrun's writing, not the user's: they go with the old type. Set
    to other values, they stay, and are said to be the old type's."""
    old = field_defaults_of_type(walked, container.get("type"))
    new = field_defaults_of_type(walked, new_type)
    if old is None or new is None or container.get("type") == new_type:
        return
    for key in [key for key in container if key != "type" and key not in new]:
        default = old.get(key, _NO_DEFAULT)
        if isinstance(container[key], (bool, int, float, str, type(None))) and \
                type(container[key]) is type(default) and container[key] == default:
            del container[key]


_NO_DEFAULT = object()


def _expand_short_form(container: Any, walked: SpecPath, component: Hashable,
                       positions: dict) -> None:
    """`loss: mse` is `loss: {type: mse}` (schema.tagged_union), so `--set loss.scale=2` sets
    the scale of that mse."""
    field = component if isinstance(component, str) else walked[-1] if walked else None
    held = container[component] if _holds(container, component) else None
    if isinstance(held, str) and field in SHORT_FORM_FIELDS:
        container[component] = {"type": held}
        path = (*walked, component)
        if path in positions:
            positions[(*path, "type")] = positions[path]


def _holds(container: Any, component: Hashable) -> bool:
    if isinstance(container, dict):
        return component in container
    return isinstance(container, list) and isinstance(component, int) \
        and 0 <= component < len(container)


def _no_such_list(container: dict, walked: SpecPath, component: Hashable) -> str:
    """`model.layerz[0]`: an index into a key the spec does not have (a new mapping would have
    been made for it, and then not be a list)."""
    where = format_path(walked) or "the top level"
    close = suggest(component, container)
    hint = f"; did you mean '{close}'?" if close else ""
    return f"{where} has no '{component}' to index{hint}"


def _from_the_start(container: Any, component: Hashable) -> Hashable:
    """A negative index counts from the end of its list, as in Python: layers[-1] is the last."""
    if isinstance(component, int) and isinstance(container, list) and \
            -len(container) <= component < 0:
        return component + len(container)
    return component


def _child(
    container: Any, walked: SpecPath, component: Hashable, positions: dict, position: Position
) -> Any:
    _check_target(container, walked, component)
    if isinstance(container, dict) and component not in container:
        # A missing intermediate key becomes a new mapping, so `--set data.limit=100` works without
        # a data section in the file; a missing optimizer or loss is the default one's (the
        # schema's), so that `--set optimizer.lr=0.01` sets the rate of the sgd it runs.
        container[component] = dict(_DEFAULT_TYPES.get(walked + (component,), {}))
        positions[walked + (component,)] = NodePositions(position, position)
    return container[component]


# What the schema gives a spec without these sections (schema.Spec's defaults; a test keeps
# them the same).
_DEFAULT_TYPES = {("optimizer",): {"type": "sgd"}, ("loss",): {"type": "cross_entropy"}}


def _check_target(container: Any, walked: SpecPath, component: Hashable) -> None:
    name = format_path(walked) or "the top level"
    if isinstance(component, int):
        _check_index(container, name, component)
    elif isinstance(container, list):
        raise _OverrideError(f"{name} is a list; select an entry first, like {name}[0].{component}")
    elif not isinstance(container, dict):
        scalar = _describe_scalar(container)
        raise _OverrideError(f"{name} is {scalar}; it has no key '{component}'")


def _check_index(container: Any, name: str, index: int) -> None:
    if isinstance(container, dict):
        raise _OverrideError(f"{name} is a mapping, not a list; use {name}.KEY")
    if not isinstance(container, list):
        raise _OverrideError(f"{name} is {_describe_scalar(container)}, not a list")
    if not 0 <= index < len(container):  # a negative index past the start is left negative
        entries = "1 entry" if len(container) == 1 else f"{len(container)} entries"
        raise _OverrideError(f"{name} has {entries}{_index_range(len(container))}")


def _index_range(count: int) -> str:
    return f" (indices 0..{count - 1}, or -{count}..-1 from the end)" if count else ""


def _describe_scalar(value: Any) -> str:
    return "null" if value is None else f"the value {value!r}"


def _replace_positions(positions: dict, path: SpecPath, value: Any, position: Position) -> None:
    for stale in [known for known in positions if known[: len(path)] == path]:
        del positions[stale]
    for subpath in _subpaths(value, path):
        positions[subpath] = NodePositions(position, position)


def _subpaths(value: Any, path: SpecPath) -> list[SpecPath]:
    found = [path]
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return found
    for component, child in children:
        found.extend(_subpaths(child, path + (component,)))
    return found
