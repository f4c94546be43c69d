"""Model metadata stored inside the model file, so one file is enough to run it.

TFLite: a ``Metadata`` entry named ``edge_seg`` in the flatbuffer's ``metadata`` list, whose
buffer holds the metadata JSON (the same object as the sidecar ``.json``). Netron and the
TFLite schema (``ai_edge_litert.schema_py_generated``) list it beside the converter's own
entries. ONNX: a ``metadata_props`` entry with the key ``edge_seg`` (``onnx.load(path)
.metadata_props``, Netron's model properties).

The model's identity (``model_sha256`` in the metadata) does not change when metadata is
embedded: it is the sha256 of the model as the converter wrote it. Embedding never rewrites
those bytes, it puts a prefix before them:

* TFLite: ``[root offset]["TFL3"][MAGIC][prefix length]`` then a new root ``Model`` table
  that points at the original tables (flatbuffer offsets are relative, so the original
  bytes keep their meaning when they move by a multiple of their alignment), a buffer list
  and metadata list with the extra entry, and the JSON; then the original file, unchanged.
* ONNX: one ``metadata_props`` record before the original bytes (a protobuf message may
  carry its fields in any order; repeated fields concatenate).

``original_bytes`` removes the prefix again, so ``model_sha256(path)`` is the hash of the
converter's output whether or not metadata is embedded, and embedding twice replaces the
first copy. Reading and writing need no TensorFlow: a few dozen lines of flatbuffer and
protobuf layout, below.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

KEY = "edge_seg"
MAGIC = b"edgeSEG1"            # after "TFL3": marks a prefix written by embed_tflite
_ALIGN = 64                    # the original bytes move by a multiple of this (>= any flatbuffer alignment)
_ONNX_PROPS_TAG = 0x72         # ModelProto field 14 (metadata_props), length-delimited

# Model table fields of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs)
_VERSION, _BUFFERS, _METADATA = 0, 4, 6
_MODEL_FIELDS = 8               # version, operator_codes, subgraphs, description, buffers,
                                # metadata_buffer, metadata, signature_defs


class EmbedError(ValueError):
    """The file cannot carry (or does not carry readable) embedded metadata."""


# -- flatbuffer reading --------------------------------------------------------------
def _u16(b, p):
    return struct.unpack_from("<H", b, p)[0]


def _u32(b, p):
    return struct.unpack_from("<I", b, p)[0]


def _field(b, table: int, i: int) -> int | None:
    """Absolute position of field ``i`` of the table at ``table``; None when absent."""
    vtable = table - struct.unpack_from("<i", b, table)[0]
    if 4 + 2 * i >= _u16(b, vtable):
        return None
    offset = _u16(b, vtable + 4 + 2 * i)
    return table + offset if offset else None


def _deref(b, p: int) -> int:
    return p + _u32(b, p)


def _tables(b, model: int, i: int) -> list[int]:
    """Positions of the tables in the vector field ``i`` of ``model``."""
    p = _field(b, model, i)
    if p is None:
        return []
    v = _deref(b, p)
    return [_deref(b, v + 4 + 4 * k) for k in range(_u32(b, v))]


def _string(b, p: int) -> str:
    s = _deref(b, p)
    return bytes(b[s + 4:s + 4 + _u32(b, s)]).decode("utf-8", "replace")


def _buffer_span(b, buffer: int) -> tuple[int, int]:
    """(start, end) of a buffer's bytes in the file; an end past the file's length means the
    file was cut short (slicing alone would hide that)."""
    data = _field(b, buffer, 0)
    if data is not None:
        v = _deref(b, data)
        return v + 4, v + 4 + _u32(b, v)
    offset, size = _field(b, buffer, 1), _field(b, buffer, 2)
    if offset is not None and size is not None:  # large models keep data after the flatbuffer
        start = struct.unpack_from("<Q", b, offset)[0]
        return start, start + struct.unpack_from("<Q", b, size)[0]
    return 0, 0


def _buffer_bytes(b, buffer: int) -> bytes:
    start, end = _buffer_span(b, buffer)
    return bytes(b[start:end])


def tflite_metadata(data: bytes) -> dict[str, bytes]:
    """Every named metadata entry of a TFLite flatbuffer -> its buffer's bytes."""
    try:
        model = _u32(data, 0)
        buffers = _tables(data, model, _BUFFERS)
        end = max((_buffer_span(data, buffer)[1] for buffer in buffers), default=0)
        if end > len(data):
            raise EmbedError(f"truncated: its weights run to byte {end}, the file has {len(data)}")
        out = {}
        for entry in _tables(data, model, _METADATA):
            name = _field(data, entry, 0)
            index = _field(data, entry, 1)
            if name is None or index is None:
                continue
            k = _u32(data, index)
            if k < len(buffers):
                out[_string(data, name)] = _buffer_bytes(data, buffers[k])
        return out
    except (struct.error, IndexError):
        raise EmbedError(f"truncated or corrupt: its tables point past the end of the file "
                         f"({len(data)} bytes)") from None


# -- identity --------------------------------------------------------------------------
def original_bytes(data: bytes) -> bytes:
    """The model as the converter wrote it: ``data`` without an embedded-metadata prefix."""
    if data[4:8] == b"TFL3" and data[8:16] == MAGIC:
        start = _u32(data, 16)
        if start % _ALIGN == 0 and start < len(data) and data[start + 4:start + 8] == b"TFL3":
            return data[start:]
    onnx = _onnx_prefix(data)
    if onnx is not None:
        return data[onnx[0]:]
    return data


def model_sha256(path: str | os.PathLike) -> str:
    """sha256 of the model without its embedded metadata: the same before and after
    ``embed``, so a sidecar's ``model_sha256`` identifies either file."""
    return hashlib.sha256(original_bytes(Path(path).read_bytes())).hexdigest()


# -- TFLite writing --------------------------------------------------------------------
class _Prefix:
    """Little-endian bytes whose absolute positions are known as they are appended."""

    def __init__(self):
        self.b = bytearray()

    def pad(self, align: int, extra: int = 0):
        while (len(self.b) + extra) % align:
            self.b.append(0)

    def put(self, fmt: str, *values) -> int:
        pos = len(self.b)
        self.b += struct.pack("<" + fmt, *values)
        return pos

    def table_list(self, field_slot: int, tables: list[int], start: int | None) -> list[int]:
        """A vector of offsets to ``tables`` (positions in the original, which begins at
        ``start``) plus one free slot; returns the slots' positions."""
        self.patch_offset(field_slot, len(self.b))
        self.put("I", len(tables) + 1)
        slots = [self.put("I", 0) for _ in range(len(tables) + 1)]
        if start is not None:
            for slot, table in zip(slots, tables):
                self.patch_offset(slot, start + table)
        return slots

    def patch_offset(self, at: int, target: int):
        """A uoffset at ``at`` pointing forward to ``target``."""
        assert target > at, "flatbuffer offsets point forward"
        struct.pack_into("<I", self.b, at, target - at)


def _model_tables(orig: bytes) -> tuple[dict, list[int], list[int]]:
    """The root Model table's fields by index, its buffers and its metadata entries other
    than ours; refuses models whose parts a prefix could not point at."""
    try:
        model = _u32(orig, 0)
        vtable = model - struct.unpack_from("<i", orig, model)[0]
        n_fields = (_u16(orig, vtable) - 4) // 2
        fields = {i: _field(orig, model, i) for i in range(min(n_fields, _MODEL_FIELDS))}
        buffers = _tables(orig, model, _BUFFERS)
        metadata = [m for m in _tables(orig, model, _METADATA)
                    if _field(orig, m, 0) is None or _string(orig, _field(orig, m, 0)) != KEY]
        for buf in buffers:
            if _field(orig, buf, 1) is not None and struct.unpack_from("<Q", orig, _field(orig, buf, 1))[0]:
                raise EmbedError("the model keeps its weights after the flatbuffer (over 2 GB); "
                                 "use a sidecar .json instead")
    except (struct.error, IndexError):
        raise EmbedError(f"truncated or corrupt: its tables point past the end of the file "
                         f"({len(orig)} bytes)") from None
    if n_fields > _MODEL_FIELDS and any(_u16(orig, vtable + 4 + 2 * i)
                                        for i in range(_MODEL_FIELDS, n_fields)):
        raise EmbedError("the model uses a newer TFLite schema than this tool knows; "
                         "use a sidecar .json instead")
    return fields, buffers, metadata


def embed_tflite(data: bytes, meta_json: bytes) -> bytes:
    """``data`` (a .tflite, with or without embedded metadata) with ``meta_json`` embedded."""
    orig = original_bytes(data)
    if orig[4:8] != b"TFL3":
        raise EmbedError("not a TFLite model (no TFL3 identifier)")
    fields, buffers, metadata = _model_tables(orig)

    # Sizes are fixed before the prefix is laid out, so the prefix length (where the
    # original starts) is computed in a first pass and the offsets written in a second.
    def layout(start: int | None):
        p = _Prefix()
        root = p.put("I", 0)
        p.b += b"TFL3" + MAGIC
        p.put("II", start or 0, 0)
        base = start or 0
        # Model vtable then table: soffset, then one 4-byte slot per field
        present = [i for i in range(_MODEL_FIELDS)
                   if i in (_BUFFERS, _METADATA) or fields.get(i) is not None]
        vt = p.put("HH", 4 + 2 * _MODEL_FIELDS, 4 + 4 * _MODEL_FIELDS)
        for i in range(_MODEL_FIELDS):
            p.put("H", 4 + 4 * i if i in present else 0)
        p.pad(4)
        table = p.put("i", 0)
        struct.pack_into("<i", p.b, table, table - vt)
        slots = {i: p.put("I", 0) for i in range(_MODEL_FIELDS)}
        p.patch_offset(root, table)
        if fields.get(_VERSION) is not None:
            struct.pack_into("<I", p.b, slots[_VERSION], _u32(orig, fields[_VERSION]))
        for i in present:
            if i in (_VERSION, _BUFFERS, _METADATA):
                continue
            if start is not None:
                p.patch_offset(slots[i], base + _deref(orig, fields[i]))
        # buffer and metadata lists: the original tables, then ours (its slot left last)
        buffer_slots = p.table_list(slots[_BUFFERS], buffers, start)
        meta_slots = p.table_list(slots[_METADATA], metadata, start)
        # our Metadata table {name, buffer index}
        mvt = p.put("HHHH", 8, 12, 4, 8)
        mtable = p.put("i", 0)
        struct.pack_into("<i", p.b, mtable, mtable - mvt)
        name_slot = p.put("I", 0)
        p.put("I", len(buffers))
        p.patch_offset(meta_slots[-1], mtable)
        p.patch_offset(name_slot, len(p.b))
        p.put("I", len(KEY.encode()))
        p.b += KEY.encode() + b"\0"
        # our Buffer table {data}
        p.pad(4)
        bvt = p.put("HHH", 6, 8, 4)
        p.pad(4)
        btable = p.put("i", 0)
        struct.pack_into("<i", p.b, btable, btable - bvt)
        data_slot = p.put("I", 0)
        p.patch_offset(buffer_slots[-1], btable)
        p.pad(16, extra=4)  # the data itself 16-aligned, as the schema asks of buffers
        p.patch_offset(data_slot, len(p.b))
        p.put("I", len(meta_json))
        p.b += meta_json
        p.pad(_ALIGN)
        return p.b

    start = len(layout(None))
    prefix = layout(start)
    assert len(prefix) == start
    return bytes(prefix) + orig


# -- ONNX --------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(b, p: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[p]
        value |= (byte & 0x7F) << shift
        p += 1
        if not byte & 0x80:
            return value, p
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _onnx_prefix(data: bytes) -> tuple[int, bytes] | None:
    """(end of our leading metadata_props record, its JSON value), or None."""
    try:
        if not data or data[0] != _ONNX_PROPS_TAG:
            return None
        length, p = _read_varint(data, 1)
        end = p + length
        fields = {}
        while p < end:
            tag, p = _read_varint(data, p)
            n, p = _read_varint(data, p)
            fields[tag] = bytes(data[p:p + n])
            p += n
        if p != end or fields.get(0x0A) != KEY.encode() or 0x12 not in fields:
            return None
        return end, fields[0x12]
    except IndexError:
        return None


def embed_onnx(data: bytes, meta_json: bytes) -> bytes:
    entry = (b"\x0a" + _varint(len(KEY)) + KEY.encode()
             + b"\x12" + _varint(len(meta_json)) + meta_json)
    return bytes([_ONNX_PROPS_TAG]) + _varint(len(entry)) + entry + original_bytes(data)


# -- both ------------------------------------------------------------------------------
def is_onnx_bytes(data: bytes) -> bool:
    return data[4:8] != b"TFL3"


def embed(data: bytes, meta: dict) -> bytes:
    """``data`` (.tflite or .onnx bytes) carrying ``meta`` as JSON."""
    meta_json = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return embed_onnx(data, meta_json) if is_onnx_bytes(data) else embed_tflite(data, meta_json)


def read_embedded(data: bytes) -> bytes | None:
    """The embedded metadata JSON (bytes) of a .tflite or .onnx model, or None."""
    if data[4:8] == b"TFL3":
        return tflite_metadata(data).get(KEY)
    found = _onnx_prefix(data)
    return found[1] if found else None
