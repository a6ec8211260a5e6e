"""Grid Engine's packed CULL format, read (pure): what qmaster's classic spooling writes for a
job record, learnt from SGE's cull_pack.c and pack.c.

A buffer starts with a zero pad and the CULL version (0x10020000). Integers are 4 bytes
big-endian; strings are NUL-terminated (an empty string is written as a lone NUL, as NULL
is); doubles are 8 bytes XDR (IEEE big-endian). An element is its status (1 = free: its
descriptor follows, the number of fields then a (name, type) pair per field; 2-4: bound to a
list, whose descriptor the reader must already know), a "changed" bit field (its size in
bits, then the bits rounded up to bytes) and one value per field of the descriptor, in
order. A field's type is the low byte of its type word, the rest are flags (spooled,
hashed, ...). A list is a presence flag, its element count, its name, a changed flag, its
descriptor and its elements; an object (sub-element) a presence flag, a descriptor and an
element; a reference nothing.

Every value is decoded from the descriptor the buffer carries, so a build with other fields
is read as it wrote them; anything the format does not allow raises CullFormatError. An
element also says where each of its strings lies in the buffer (`spans`): with no lengths in
the format, that is what lets a string be rewritten in place (producer.gridengine_spool).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Union

CULL_VERSION = 0x10020000
FREE_ELEM = 1  # the element carries its own descriptor
BOUND_ELEMS = frozenset({2, 3, 4})  # bound, transitionally bound, object: the list's descriptor
MAX_DESCR_SIZE = 200  # SGE's largest descriptor (4 * BASIC_UNIT)
MAX_DEPTH = 16  # lists within elements within lists: a job record nests four deep
TYPE_MASK = 0xFF

# The field types of cull_multitype.h (lEndT = 0 ends a descriptor and is never packed).
DOUBLE_T = 2
ULONG_T = 3
BOOL_T = 6
STRING_T = 8
LIST_T = 9
OBJECT_T = 10
REF_T = 11
HOST_T = 12
TYPE_NAMES = {1: "float", DOUBLE_T: "double", ULONG_T: "ulong", 4: "long", 5: "char",
              BOOL_T: "bool", 7: "int", STRING_T: "string", LIST_T: "list", OBJECT_T: "object",
              REF_T: "ref", HOST_T: "host"}

_U32 = struct.Struct(">I")
_DOUBLE = struct.Struct(">d")



CullValue = Union[int, float, bytes, None, "CullList", "CullElement"]


class CullFormatError(ValueError):
    """The bytes are not a packed CULL element this reader understands."""


class Span(NamedTuple):
    """Where a string's bytes lie in the buffer: data[start:end], its NUL terminator at end
    (start == end for an empty or NULL string)."""

    start: int
    end: int


@dataclass(frozen=True)
class Field:
    name: int  # the field's number (e.g. JB_job_number = 50 in SGE 8.1.9)
    type_word: int  # type in the low byte, flags above

    @property
    def type(self) -> int:
        return self.type_word & TYPE_MASK


@dataclass(frozen=True)
class CullElement:
    """One element: its descriptor and a value per field (None: a NULL string, list or
    object; absent from values: a reference, which is never packed), and where each string
    or host field's bytes lie in the buffer it was read from (not part of its value)."""

    descriptor: tuple[Field, ...]
    values: Mapping[int, CullValue]
    spans: Mapping[int, Span] = dataclasses.field(default_factory=dict, compare=False)
    _fields: Mapping[int, Field] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", {f.name: f for f in self.descriptor})

    def field(self, name: int) -> Field | None:
        return self._fields.get(name)


@dataclass(frozen=True)
class CullList:
    name: bytes
    descriptor: tuple[Field, ...]
    elements: tuple[CullElement, ...]

    def __iter__(self) -> Iterator[CullElement]:
        return iter(self.elements)

    def __len__(self) -> int:
        return len(self.elements)


def unpack_element(data: bytes, bound: tuple[Field, ...] | None = None) -> CullElement:
    """The element a whole packed buffer holds. A free element carries its descriptor; a
    bound one (packed while it was in a list) does not, and is read with `bound`, the
    descriptor of its type. Raises CullFormatError unless the buffer is exactly one element."""
    reader = _Reader(data)
    pad, version = reader.u32(), reader.u32()
    if pad != 0 or version != CULL_VERSION:
        raise CullFormatError(f"no CULL header: pad {pad:#x}, version {version:#x} "
                              f"(expected 0, {CULL_VERSION:#x})")
    element = reader.element(bound, depth=0)
    if reader.offset != len(data):
        raise CullFormatError(f"{len(data) - reader.offset} bytes after the element "
                              f"(ends at {reader.offset} of {len(data)})")
    return element


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def _need(self, size: int, what: str) -> int:
        """The offset of the next size bytes, which are then consumed."""
        offset = self.offset
        if offset + size > len(self.data):
            raise CullFormatError(f"truncated: {what} needs {size} bytes at offset {offset}, "
                                  f"{len(self.data) - offset} left")
        self.offset = offset + size
        return offset

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.data, self._need(4, "an integer"))[0]
        return value

    def double(self) -> float:
        value: float = _DOUBLE.unpack_from(self.data, self._need(8, "a double"))[0]
        return value

    def string(self) -> bytes | None:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise CullFormatError(f"truncated: unterminated string at offset {self.offset}")
        value = self.data[self.offset:end]
        self.offset = end + 1
        return value or None  # SGE packs NULL and "" alike and reads both back as NULL

    def descriptor(self) -> tuple[Field, ...]:
        count = self.u32()
        if not 0 < count <= MAX_DESCR_SIZE:
            raise CullFormatError(f"descriptor of {count} fields at offset {self.offset - 4}")
        words = struct.unpack_from(f">{2 * count}I", self.data,
                                   self._need(8 * count, "a descriptor"))
        fields = tuple(Field(name, kind) for name, kind in zip(words[::2], words[1::2],
                                                                strict=True))
        for field in fields:
            if field.type not in TYPE_NAMES:
                raise CullFormatError(f"field {field.name} has unknown type {field.type}")
        # SGE's descriptors name each field once; a repeated one would leave a value no look-up
        # by name sees (nor rewrites).
        if len({field.name for field in fields}) != count:
            raise CullFormatError(f"a descriptor naming a field twice at offset "
                                  f"{self.offset - 8 * count}")
        return fields

    def element(self, bound: tuple[Field, ...] | None, depth: int) -> CullElement:
        if depth > MAX_DEPTH:
            raise CullFormatError(f"nested deeper than {MAX_DEPTH} levels")
        status = self.u32()
        if status == FREE_ELEM:
            descriptor = self.descriptor()
        elif status in BOUND_ELEMS and bound is not None:
            descriptor = bound
        elif status in BOUND_ELEMS:
            raise CullFormatError(f"a bound element (status {status}) at offset "
                                  f"{self.offset - 4} and no descriptor to read it with")
        else:
            raise CullFormatError(f"element status {status} at offset {self.offset - 4}")
        changed_bits = self.u32()
        if changed_bits != len(descriptor):
            raise CullFormatError(f"changed-field bits {changed_bits} for a descriptor of "
                                  f"{len(descriptor)} fields")
        self._need((changed_bits + 7) // 8, "the changed-field bits")
        values: dict[int, CullValue] = {}
        spans: dict[int, Span] = {}
        for field in descriptor:
            if field.type in (STRING_T, HOST_T):
                start = self.offset
                values[field.name] = self.string()
                spans[field.name] = Span(start, self.offset - 1)
            elif field.type != REF_T:
                values[field.name] = self.value(field, depth)
        return CullElement(descriptor, values, spans)

    def value(self, field: Field, depth: int) -> CullValue:
        """A field's value other than a string's (element() reads those, with their spans)."""
        kind = field.type
        if kind in (ULONG_T, BOOL_T):
            return self.u32()
        if kind == DOUBLE_T:
            return self.double()
        if kind == LIST_T:
            return self.list(depth)
        if kind == OBJECT_T:
            return self.object(depth)
        # float, long, char and int fields: SGE itself refuses to pack them.
        raise CullFormatError(f"field {field.name} has type {TYPE_NAMES[kind]}, never packed")

    def list(self, depth: int) -> CullList | None:
        if not self.u32():
            return None
        count = self.u32()
        # Each element takes at least its status and bit count: a count beyond what is left
        # is a damaged buffer, not a reason to loop.
        if count * 8 > len(self.data) - self.offset:
            raise CullFormatError(f"list of {count} elements in {len(self.data) - self.offset}"
                                  " bytes")
        name = self.string() or b""
        self.u32()  # the list's changed flag
        descriptor = self.descriptor()
        elements = tuple(self.element(descriptor, depth + 1) for _ in range(count))
        return CullList(name, descriptor, elements)

    def object(self, depth: int) -> CullElement | None:
        if not self.u32():
            return None
        descriptor = self.descriptor()
        return self.element(descriptor, depth + 1)
