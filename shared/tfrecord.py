"""``tf.train.Example`` bytes and TFRecord framing without TensorFlow.

Importing TensorFlow costs about 9 CPU-seconds per process, and the Beam
workers (and each one's isolation subprocess) imported it only to serialise
one message type and to frame records: a fixed cost on every worker's
start-up and on the job's serial tail.  The formats are small and fixed, so
this module writes them with the standard library and ``google_crc32c``
(which ships with apache-beam[gcp]; its C extension, as a pure-Python CRC
of a 36 MB record would take minutes):

* an Example is the protobuf encoding that
  ``tf.train.Example.SerializeToString(deterministic=True)`` gives (map
  entries in the Python runtime's sorted order, Int64List packed), so the
  bytes are those TensorFlow wrote before (tests/test_schema.py compares
  them);
* a framed record is TFRecord's ``uint64 length, masked crc32c(length),
  data, masked crc32c(data)``, little-endian;
* GZIP is one gzip member per framed record, at zlib's default level 6,
  memLevel 9, without a timestamp, as ``tf.io.TFRecordWriter`` writes it.
  A shard is the concatenation of its records' members, which
  ``tf.data.TFRecordDataset`` (and ``gzip``) read as one stream, so each
  worker compresses its own patients and the shard is only joined.

Only writing lives here; reading stays with ``tf.data`` (``schema.parse_tf``).
"""

from __future__ import annotations

import struct
import zlib

import google_crc32c

# Protobuf's wire type of bytes, strings, messages and packed lists (https://protobuf.dev/programming-guides/encoding/).
_LENGTH_DELIMITED = 2
# tf.train.Feature's oneof field numbers (tensorflow/core/example/feature.proto).
_BYTES_LIST, _INT64_LIST = 1, 3
_MASK_DELTA = 0xA282EAD8
GZIP_LEVEL = 6  # zlib's default, and TFRecordWriter's: its bytes, for a 1.6 % smaller shard than level 1
GZIP_MEM_LEVEL = 9  # TFRecordWriter's
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


def _varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its 64-bit two's complement (10 bytes), as protobuf does."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{value} does not fit in an int64")
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, chunks: list) -> list:
    """A length-delimited field (tag, length, payload) as a list of byte chunks.

    Messages are built as chunk lists and joined once, so a 25 MB image is
    copied once, not once per level of nesting.
    """
    size = sum(len(c) for c in chunks)
    return [_varint(number << 3 | _LENGTH_DELIMITED) + _varint(size)] + chunks


def bytes_feature(values) -> list:
    """An encoded ``Feature`` holding a BytesList (an empty list still sets the oneof, as TensorFlow does)."""
    return _field(_BYTES_LIST, [c for v in values for c in _field(1, [bytes(v) if not isinstance(v, bytes) else v])])


def int64_feature(values) -> list:
    """An encoded ``Feature`` holding a packed Int64List."""
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(_INT64_LIST, _field(1, [packed]) if packed else [])


def _map_order(key: str) -> tuple[int, ...]:
    """Sort key of a map entry in deterministic serialisation, as protobuf's Python runtime (upb) orders it.

    Keys compare byte by byte, but a key that is a prefix of another comes
    *after* it ("image_shape" before "image"; C++ protobuf would put it
    before): a sentinel above every byte value ends each key.
    """
    return tuple(key.encode()) + (256,)


def example(features: dict[str, list]) -> bytes:
    """An encoded ``Example`` from encoded features (``bytes_feature``/``int64_feature``), in map order.

    Each entry is ``key = 1, value = 2`` inside field 1 of ``Features``,
    itself field 1 of ``Example``, in the order of :func:`_map_order`.
    """
    entries = []
    for key, value in sorted(features.items(), key=lambda kv: _map_order(kv[0])):
        entries += _field(1, _field(1, [key.encode()]) + _field(2, value))
    return b"".join(_field(1, entries))


def masked_crc32c(data) -> int:
    """TFRecord's masked CRC-32C: rotated right by 15 bits plus a constant, so CRCs of CRCs stay sound."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> list[bytes]:
    """One TFRecord as chunks: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return [length, struct.pack("<I", masked_crc32c(length)), data, struct.pack("<I", masked_crc32c(data))]


def gzip_member(chunks: list[bytes]) -> bytes:
    """The chunks as one gzip member with TFRecordWriter's settings (no timestamp: equal data, equal bytes)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS, GZIP_MEM_LEVEL)
    return b"".join([compressor.compress(c) for c in chunks] + [compressor.flush()])


def shard_piece(data: bytes, compression: str) -> bytes:
    """A record as it lies in a shard of ``compression`` ("GZIP" or "NONE"): framed, then compressed.

    Shards are these pieces concatenated, so a shard can be joined from
    pieces made on different machines and still be one valid stream.
    """
    if compression == "GZIP":
        return gzip_member(frame(data))
    if compression == "NONE":
        return b"".join(frame(data))
    raise ValueError(f"unknown shard compression {compression!r}; use GZIP or NONE")
