"""The wire format of trajectory batches and parameters (schema version 1).

A message is one pytree of arrays with a JSON header::

    offset  size  field
    0       4     magic  b"JMTB"
    4       2     schema version, uint16 little-endian (this module writes 1)
    6       4     header length H, uint32 little-endian
    10      H     header, UTF-8 JSON:
                    {"kind": "trajectories" | "params",
                     "meta": {...},                       # see below
                     "arrays": [{"name": str, "dtype": str, "shape": [int, ...],
                                 "offset": int, "nbytes": int}, ...]}
    10+H    ...   the arrays' bytes, C order, little-endian, at their offsets (8-byte aligned,
                  counted from the start of this data section)

``name`` is the leaf's path in the pytree (``jax.tree_util.keystr``, e.g.
``.post.obs`` or ``['params']['Dense_0']['kernel']``); ``dtype`` a NumPy dtype name
(``float32``, ``int32``, ``uint32``, ``bool``, ...). The reader rebuilds the pytree from a
*template* (the ``jax.eval_shape`` of what it expects) and refuses any message whose names,
dtypes or shapes differ, so a sampler and a trainer built from different specs cannot mix data.

Trajectory batches (``kind="trajectories"``) carry in ``meta``: ``run``, ``algo``,
``spec_sha256`` (of the run's canonical spec JSON), ``sampler_id``, ``batch_id`` (unique per
batch: ``SAMPLER-NONCE-SEQ``), ``params_version`` (the trainer iteration whose parameters
sampled it), ``num_tasks`` (the leading axis of every array) and ``created`` (UNIX time). The
arrays are the algorithm's ``sample`` output (``maml_rl.Rollouts``: task params, pre- and
post-update batches, returns; ``rl2.Rollouts``: task params, trials, bootstrap values).
Parameters (``kind="params"``) carry ``run``, ``spec_sha256`` and ``version``.

A reader accepts schema version 1 only and says so for any other.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import jax
import numpy as np

__all__ = ["MAGIC", "SCHEMA_VERSION", "SchemaError", "encode", "decode", "read_header",
           "tree_arrays"]

MAGIC = b"JMTB"
SCHEMA_VERSION = 1
KINDS = ("trajectories", "params")
_PREFIX = struct.Struct("<4sHI")
_ALIGN = 8


class SchemaError(ValueError):
    """A message that is not a valid schema-1 message, or not the one the reader expects."""


def tree_arrays(tree: Any) -> list[tuple[str, np.ndarray]]:
    """``(name, array)`` for every leaf of ``tree`` in flattening order (arrays on the host)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                 jax.dtypes.prng_key):
            raise SchemaError(f"{jax.tree_util.keystr(path)}: PRNG key arrays are not "
                              f"serialisable; pass jax.random.key_data(key)")
        out.append((jax.tree_util.keystr(path), np.asarray(leaf)))
    return out


def encode(tree: Any, kind: str, meta: Mapping[str, Any]) -> bytes:
    """Serialises a pytree of arrays with ``meta`` (JSON-able) into one message."""
    if kind not in KINDS:
        raise SchemaError(f"kind: expected one of {KINDS}, got {kind!r}")
    arrays, chunks, offset = [], [], 0
    for name, array in tree_arrays(tree):
        if array.dtype.kind not in "biuf":
            raise SchemaError(f"{name}: unsupported dtype {array.dtype}")
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"),
                                                  copy=False).tobytes()
        pad = -offset % _ALIGN
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        arrays.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                       "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    try:
        header = json.dumps({"kind": kind, "meta": dict(meta), "arrays": arrays},
                            separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise SchemaError(f"meta: not JSON-serialisable ({e})") from None
    return b"".join([_PREFIX.pack(MAGIC, SCHEMA_VERSION, len(header)), header, *chunks])


def read_header(message: bytes) -> tuple[dict[str, Any], memoryview]:
    """The parsed header and the data section of ``message`` (no array is copied)."""
    view = memoryview(message)
    if len(view) < _PREFIX.size:
        raise SchemaError(f"message: {len(view)} bytes, shorter than the {_PREFIX.size}-byte "
                          f"prefix")
    magic, version, length = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise SchemaError(f"message: bad magic {bytes(magic)!r} (expected {MAGIC!r}); not a "
                          f"jmeta message")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"message: schema version {version}; this jmeta reads version "
                          f"{SCHEMA_VERSION} only")
    end = _PREFIX.size + length
    if len(view) < end:
        raise SchemaError(f"message: truncated header ({len(view)} bytes, header ends at {end})")
    try:
        header = json.loads(bytes(view[_PREFIX.size:end]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SchemaError(f"message: header is not JSON ({e})") from None
    if (not isinstance(header, dict) or header.get("kind") not in KINDS
            or not isinstance(header.get("meta"), dict)
            or not isinstance(header.get("arrays"), list)):
        raise SchemaError("message: header lacks kind/meta/arrays")
    return header, view[end:]


def decode(message: bytes, template: Any, kind: str) -> tuple[Any, dict[str, Any]]:
    """``(tree, meta)`` of ``message``, the tree shaped like ``template``.

    Args:
      template: a pytree of arrays or ``jax.ShapeDtypeStruct`` with the expected structure,
        names, dtypes and shapes.
      kind: the expected kind.

    Raises:
      SchemaError: a malformed message, another kind, or arrays that do not match ``template``
        (names the first difference).
    """
    header, data = read_header(message)
    if header["kind"] != kind:
        raise SchemaError(f"message: a {header['kind']!r} message where {kind!r} was expected")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    entries = header["arrays"]
    want = [jax.tree_util.keystr(p) for p, _ in leaves]
    got = [e.get("name") for e in entries]
    if want != got:
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        raise SchemaError(f"message: arrays do not match the expected structure (missing "
                          f"{missing[:3]}, unexpected {extra[:3]}); sampler and trainer must "
                          f"run the same spec")
    out = []
    for (path, leaf), e in zip(leaves, entries):
        name = e["name"]
        try:
            dtype = np.dtype(e["dtype"])
            shape = tuple(int(d) for d in e["shape"])
            offset, nbytes = int(e["offset"]), int(e["nbytes"])
        except (TypeError, ValueError, KeyError) as err:
            raise SchemaError(f"{name}: bad array entry ({err})") from None
        if dtype != np.dtype(leaf.dtype) or shape != tuple(leaf.shape):
            raise SchemaError(f"{name}: got {dtype.name}{list(shape)}, expected "
                              f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}")
        if nbytes != dtype.itemsize * int(np.prod(shape)) or offset < 0 \
                or offset + nbytes > len(data):
            raise SchemaError(f"{name}: {nbytes} bytes at {offset} do not fit the message "
                              f"({len(data)} data bytes)")
        array = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=int(np.prod(shape)),
                              offset=offset).reshape(shape)
        out.append(array.astype(dtype, copy=False))
    return jax.tree_util.tree_unflatten(treedef, out), header["meta"]
