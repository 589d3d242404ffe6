"""Read TensorFlow checkpoints (V2 tensor bundles) with numpy alone; no TensorFlow needed.

A V2 checkpoint ``<prefix>`` is an index file ``<prefix>.index`` and data shards
``<prefix>.data-<k>-of-<n>``. The index is an SSTable in LevelDB's table format:

* a 48-byte footer at the end: two block handles (metaindex, index; each two varints: offset and
  size), zero padding to 40 bytes, and the 8-byte magic ``0xdb4775248b80fb57``;
* blocks of key/value entries, each key stored as (bytes shared with the previous key, new
  bytes, value length) varints plus the new key bytes and the value; a block ends with its restart
  offsets (uint32 each) and their count (uint32), and is followed on disk by a 5-byte trailer:
  compression type (TF writes 0, none) and a masked CRC-32C of block + type;
* the index block maps a separator key to the handle of each data block.

Values are protobufs: the empty key holds a ``BundleHeaderProto`` (num_shards = 1,
endianness = 2, version = 3) and every tensor name a ``BundleEntryProto`` (dtype = 1,
shape = 2, shard_id = 3, offset = 4, size = 5, crc32c = 6, slices = 7). The few varint and
length-delimited fields needed are decoded by hand. A tensor's bytes sit raw (little-endian, C
order) in its shard at ``[offset, offset + size)``; their masked CRC-32C is checked on read.

A SavedModel directory keeps its variables as the bundle ``variables/variables``; a ``.zip`` of a
SavedModel or checkpoint (as the later NLRN release ships them) is read in place.

Anything outside this (V1 checkpoints, compressed blocks, partitioned or string tensors,
big-endian bundles) raises a :class:`~restorekit.errors.WeightsError` that says so.
"""

from __future__ import annotations

import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from restorekit.errors import WeightsError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5

# tensorflow/core/framework/types.proto: the numeric DataTypes a checkpoint of weights holds.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 20: "resource", 21: "variant"}

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


# --------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), as TF's table and bundle writers mask it.


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` (pure Python; about 1 s per 5 MB, fine for the tensors of one model)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """LevelDB/TF's masked CRC (rotated and offset so that CRCs of CRCs stay well distributed)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Varints and the protobuf wire format (only what the bundle protos need).


class _FormatError(Exception):
    """Internal: the bytes do not follow the expected format (turned into a WeightsError)."""


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _FormatError("varint longer than 64 bits")


def _proto_fields(buf: bytes | memoryview) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into ``{field number: [values]}`` (wire types 0, 1, 2, 5)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + length])
            if len(value) != length:
                raise _FormatError("truncated length-delimited field")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _FormatError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    if pos != len(buf):
        raise _FormatError("protobuf message overruns its buffer")
    return fields


def _first(fields: dict[int, list[int | bytes]], number: int, default: int | bytes = 0):
    values = fields.get(number)
    return values[-1] if values else default  # proto3: the last value of a scalar field wins


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# --------------------------------------------------------------------------------------------
# The SSTable (LevelDB table format).


def _block_handle(buf: bytes | memoryview, pos: int = 0) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int]) -> memoryview:
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(table):
        raise _FormatError(f"block at {offset} (+{size}) runs past the end of the file")
    block = memoryview(table)[offset:end]
    kind = table[end]
    if kind != 0:
        raise _FormatError(
            f"block at {offset} is compressed (type {kind}); only uncompressed tables, as "
            "TensorFlow writes them, are supported"
        )
    stored = struct.unpack_from("<I", table, end + 1)[0]
    if masked_crc32c(table[offset : end + 1]) != stored:
        raise _FormatError(f"block at {offset} fails its CRC-32C check (file damaged?)")
    return block


def _block_entries(block: memoryview) -> list[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise _FormatError("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    data_end = len(block) - 4 - 4 * num_restarts
    if data_end < 0:
        raise _FormatError("block restart array larger than the block")
    entries = []
    key = b""
    pos = 0
    while pos < data_end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > data_end:
            raise _FormatError("block entry out of bounds")
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_sstable(table: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable held in ``table``, in file order.

    Raises:
        WeightsError: the bytes are not an uncompressed LevelDB-format table.
    """
    try:
        if len(table) < _FOOTER_SIZE:
            raise _FormatError("file shorter than a table footer")
        footer = memoryview(table)[-_FOOTER_SIZE:]
        if struct.unpack_from("<Q", footer, 40)[0] != _TABLE_MAGIC:
            raise _FormatError("no table magic number at the end")
        _metaindex, pos = _block_handle(footer)
        index, _ = _block_handle(footer, pos)
        pairs: list[tuple[bytes, bytes]] = []
        for _separator, handle_bytes in _block_entries(_read_block(table, index)):
            handle, _ = _block_handle(handle_bytes)
            pairs.extend((k, bytes(v)) for k, v in _block_entries(_read_block(table, handle)))
        return pairs
    except (_FormatError, struct.error) as exc:
        raise WeightsError(f"not a readable TensorFlow checkpoint index: {exc}") from exc


# --------------------------------------------------------------------------------------------
# The bundle.


@dataclass(frozen=True)
class TensorEntry:
    """Where and how one tensor of a bundle is stored (a decoded ``BundleEntryProto``)."""

    name: str
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype, or ``None`` for types this reader does not decode (strings, ...)."""
        return _DTYPES.get(self.dtype_code)

    @property
    def dtype_name(self) -> str:
        dtype = self.dtype
        return dtype.name if dtype is not None else _DTYPE_NAMES.get(self.dtype_code, "unknown")


def _parse_entry(name: str, value: bytes) -> TensorEntry:
    fields = _proto_fields(value)
    dims: list[int] = []
    shape_msg = _first(fields, 2, b"")
    if shape_msg:
        shape_fields = _proto_fields(shape_msg)
        if _first(shape_fields, 3, 0):
            raise _FormatError(f"tensor {name!r} has an unknown rank")
        for dim in shape_fields.get(2, []):
            dims.append(_signed64(int(_first(_proto_fields(dim), 1, 0))))
    crc = fields.get(6)
    return TensorEntry(
        name=name,
        dtype_code=int(_first(fields, 1, 0)),
        shape=tuple(dims),
        shard_id=int(_first(fields, 3, 0)),
        offset=_signed64(int(_first(fields, 4, 0))),
        size=_signed64(int(_first(fields, 5, 0))),
        crc32c=int(crc[-1]) if crc else None,
        sliced=bool(fields.get(7)),
    )


class _Files:
    """Read the files of a bundle from a directory or from inside a zip archive."""

    def __init__(self, zip_path: Path | None = None) -> None:
        self._zip = zipfile.ZipFile(zip_path) if zip_path is not None else None

    def exists(self, name: str) -> bool:
        if self._zip is None:
            return Path(name).is_file()
        try:
            self._zip.getinfo(name)
        except KeyError:
            return False
        return True

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str, offset: int = 0, size: int | None = None) -> bytes:
        if self._zip is None:
            with open(name, "rb") as f:
                f.seek(offset)
                return f.read() if size is None else f.read(size)
        with self._zip.open(name) as f:
            f.seek(offset)
            return f.read() if size is None else f.read(size)


class TFCheckpoint:
    """A TensorFlow V2 checkpoint (or SavedModel variables), read without TensorFlow.

    Args:
        path: a checkpoint prefix (``.../nlrn-data-400000``), its ``.index``, ``.data-*`` or
            ``.meta`` file, a directory holding a ``checkpoint`` state file or exactly one
            ``*.index``, a SavedModel directory (``variables/variables.index``), or a ``.zip`` of
            either.

    Raises:
        WeightsError: nothing readable at ``path``, or a bundle this reader cannot parse.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix == ".zip" and self.path.is_file():
            self._files = _Files(self.path)
            self.prefix = _prefix_in_zip(self.path)
        else:
            self._files = _Files()
            self.prefix = str(resolve_checkpoint_prefix(self.path))
        index_name = self.prefix + ".index"
        pairs = read_sstable(self._files.read(index_name))
        try:
            self._parse_index(pairs)
        except (_FormatError, struct.error) as exc:
            raise WeightsError(f"cannot parse the checkpoint index {index_name}: {exc}") from exc

    def _parse_index(self, pairs: list[tuple[bytes, bytes]]) -> None:
        if not pairs or pairs[0][0] != b"":
            raise _FormatError("no bundle header (empty key) in the index")
        header = _proto_fields(pairs[0][1])
        self.num_shards = int(_first(header, 1, 1))
        if int(_first(header, 2, 0)) != 0:
            raise _FormatError("the bundle was written big-endian; only little-endian is supported")
        self.entries: dict[str, TensorEntry] = {}
        for key, value in pairs[1:]:
            name = key.decode("utf-8")
            self.entries[name] = _parse_entry(name, value)

    def close(self) -> None:
        """Close the zip archive the bundle is read from (nothing to do for plain files)."""
        self._files.close()

    def __enter__(self) -> TFCheckpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def list_variables(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every tensor, sorted by name (as ``tf.train.list_variables``)."""
        return [(name, e.shape) for name, e in sorted(self.entries.items())]

    def _shard_name(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """Return one tensor as a numpy array of its stored dtype and shape.

        Args:
            name: the variable name as stored (``model/conv1/kernel``).
            verify: check the stored CRC-32C of the tensor's bytes.

        Raises:
            WeightsError: unknown name, a type or layout this reader does not decode, a missing
                shard, or bytes that fail their checksum.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise WeightsError(f"no tensor {name!r} in checkpoint {self.prefix}")
        dtype = entry.dtype
        if entry.sliced:
            raise WeightsError(
                f"tensor {name!r} is stored partitioned in slices, which this reader does not "
                "assemble; re-save the checkpoint without variable partitioning"
            )
        if dtype is None:
            raise WeightsError(
                f"tensor {name!r} has dtype {entry.dtype_name}, which this reader does not decode"
            )
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size or entry.offset < 0:
            raise WeightsError(
                f"tensor {name!r}: {entry.size} stored bytes do not fit shape {list(entry.shape)} "
                f"of {dtype.name}"
            )
        shard = self._shard_name(entry.shard_id)
        if not self._files.exists(shard):
            raise WeightsError(f"checkpoint data shard {shard} is missing (tensor {name!r})")
        raw = self._files.read(shard, entry.offset, entry.size)
        if len(raw) != entry.size:
            raise WeightsError(f"checkpoint data shard {shard} is truncated (tensor {name!r})")
        if verify and entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
            raise WeightsError(f"tensor {name!r} fails its CRC-32C check in {shard} (damaged?)")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()

    def read_all(
        self, names: list[str] | None = None, verify: bool = True
    ) -> dict[str, np.ndarray]:
        """Read several tensors (all that this reader can decode when ``names`` is ``None``)."""
        if names is None:
            names = [n for n, e in sorted(self.entries.items()) if e.dtype and not e.sliced]
        return {name: self.read(name, verify) for name in names}


def resolve_checkpoint_prefix(path: str | Path) -> Path:
    """Find the V2 bundle prefix that ``path`` designates (see :class:`TFCheckpoint`).

    Raises:
        WeightsError: no ``.index`` file can be found from ``path``.
    """
    path = Path(path)
    if path.is_dir():
        saved_model = path / "variables" / "variables"
        if Path(f"{saved_model}.index").is_file():
            return saved_model
        state = path / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), re.M)
            if match:
                prefix = Path(match.group(1))
                prefix = prefix if prefix.is_absolute() else path / prefix
                if Path(f"{prefix}.index").is_file():
                    return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        found = f"{len(indexes)} .index files" if indexes else "no .index file"
        raise WeightsError(
            f"{path} holds {found}; pass the checkpoint prefix (e.g. {path}/model-400000) or "
            "a SavedModel directory (with variables/variables.index)"
        )
    text = str(path)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = _DATA_SUFFIX.sub("", text)
    if Path(f"{text}.index").is_file():
        return Path(text)
    if path.is_file():
        raise WeightsError(
            f"{path} is not a TensorFlow V2 checkpoint (no {text}.index next to it). V1 "
            "checkpoints (one file, TF < 1.0) are not supported: re-save with tf.train.Saver "
            "in TensorFlow >= 1.0"
        )
    raise WeightsError(f"TensorFlow checkpoint not found: {path} (no {text}.index)")


def _prefix_in_zip(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        indexes = [n for n in zf.namelist() if n.endswith(".index")]
    saved = [n for n in indexes if PurePosixPath(n).parts[-2:] == ("variables", "variables.index")]
    pick = saved or indexes
    if len(pick) != 1:
        raise WeightsError(
            f"{path} holds {len(pick)} checkpoint index files ({', '.join(pick[:4]) or 'none'}); "
            "unzip it and pass the checkpoint prefix or SavedModel directory"
        )
    return pick[0][: -len(".index")]
