"""npqwen.weights, the safetensors reader: round trips against files the safetensors package
writes itself, bf16 written by hand, every malformed header we can think of (each must be a
CheckpointError naming the file, never another exception), random corruption of valid files,
and checkpoint folders (pickles only, broken shard indexes, tensors that disagree with config)."""

import json
import mmap
import os
import shutil
import tempfile
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load_file, save_file

from npqwen import CheckpointError, load_model
from npqwen.weights import open_checkpoint, open_safetensors, read_header, to_float32

from conftest import CHECKPOINTS

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The format's dtype names, restated here rather than taken from npqwen.weights.
ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
             "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
             "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
NUMPY_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def write_raw(path, header, data=b"", n=None):
    """A safetensors file byte by byte: 8-byte little-endian header length, header, data."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write((len(header) if n is None else n).to_bytes(8, "little"))
        f.write(header)
        f.write(data)
    return str(path)


def is_memory_mapped(a):
    base = a
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def assert_bad(path, *needles):
    with pytest.raises(CheckpointError) as e:
        open_safetensors(str(path))
    msg = str(e.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"
    return msg


# ---------------------------------------------------------------------------------------------
# round trips through the safetensors package


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=12)


@st.composite
def tensor_dicts(draw):
    out = {}
    for name in draw(st.lists(names, max_size=5, unique=True)):
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
        out[name] = draw(hnp.arrays(dtype, shape))
    return out


@SETTINGS
@given(tensors=tensor_dicts(), metadata=st.none() | st.dictionaries(names, st.text(max_size=10), max_size=3))
def test_round_trip_against_safetensors_package(tensors, metadata):
    # safetensors 0.8.0 itself writes invalid JSON ('{},"__metadata__":{...}}') for no tensors plus metadata
    assume(tensors or metadata != {})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        save_file(tensors, path, metadata=metadata)
        got = open_safetensors(path)
        assert sorted(got) == sorted(tensors)
        for name, want in tensors.items():
            a = got[name]
            assert a.dtype == want.dtype and a.shape == want.shape, name
            assert a.tobytes() == want.tobytes(), name  # bit-exact, NaN payloads included
            if any(t.nbytes for t in tensors.values()):  # see test_all_empty_tensors_are_read_only too
                assert not a.flags.writeable, name
            if a.size:
                assert is_memory_mapped(a), name
                with pytest.raises(ValueError):
                    a.flat[0] = a.flat[0]
        assert read_header(path)[2] == (metadata or {})


def test_round_trip_every_dtype_by_hand(tmp_path):
    tensors = {f"t{i}": (np.arange(24) - 7).astype(dt).reshape(2, 3, 4) for i, dt in enumerate(NUMPY_DTYPES)}
    tensors["empty"] = np.zeros((3, 0, 2), np.float32)
    tensors["scalar"] = np.array(2.5, np.float64)
    save_file(tensors, str(tmp_path / "x.safetensors"))
    got = open_safetensors(str(tmp_path / "x.safetensors"))
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)


def test_empty_file_with_no_tensors(tmp_path):
    path = str(tmp_path / "empty.safetensors")
    save_file({}, path)
    assert open_safetensors(path) == {}
    assert open_safetensors(write_raw(tmp_path / "bare.safetensors", b"{}")) == {}
    assert open_safetensors(write_raw(tmp_path / "meta.safetensors", {"__metadata__": {"format": "pt"}})) == {}


def test_all_empty_tensors_are_read_only(tmp_path):
    path = str(tmp_path / "x.safetensors")
    save_file({"a": np.zeros((0, 3), np.float32), "b": np.zeros(0, np.int64)}, path)
    got = open_safetensors(path)
    assert got["a"].shape == (0, 3) and got["b"].dtype == np.int64
    assert not got["a"].flags.writeable and not got["b"].flags.writeable


def test_mapped_not_loaded(tmp_path):
    """A tensor of a large file is a view of the mapped file, not a copy in memory."""
    path = str(tmp_path / "big.safetensors")
    save_file({"w": np.ones((1024, 1024), np.float32)}, path)
    tracemalloc.start()
    try:
        w = open_safetensors(path)["w"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert w.shape == (1024, 1024) and peak < 1_000_000
    assert float(w[1023, 1023]) == 1.0


# ---------------------------------------------------------------------------------------------
# bfloat16, which the safetensors package cannot hand to NumPy


def test_bf16_written_by_hand(tmp_path):
    want = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -1.1754944e-38]], np.float32)  # all exact in bf16
    bits = (want.view(np.uint32) >> 16).astype("<u2")
    header = {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}
    w = open_safetensors(write_raw(tmp_path / "bf16.safetensors", header, bits.tobytes()))["w"]
    assert w.dtype == np.dtype(ml_dtypes.bfloat16) and w.shape == (2, 3) and not w.flags.writeable
    np.testing.assert_array_equal(w.astype(np.float32), want)
    f = to_float32(w)
    assert f.dtype == np.float32 and f.flags.writeable
    np.testing.assert_array_equal(f, want)


@SETTINGS
@given(hnp.arrays(np.uint16, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=16)))
def test_bf16_to_float32_is_a_16_bit_shift(bits):
    with tempfile.TemporaryDirectory() as d:
        header = {"w": {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [0, bits.nbytes]}}
        w = open_safetensors(write_raw(os.path.join(d, "w.safetensors"), header, bits.astype("<u2").tobytes()))["w"]
        assert w.dtype == np.dtype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(w.view(np.uint16), bits)
        f = to_float32(w)
        want = (bits.astype(np.uint32) << 16).view(np.float32)
        assert f.dtype == np.float32 and f.shape == bits.shape
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(f), nan)
        np.testing.assert_array_equal(f[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 included


def test_to_float32_of_other_dtypes(tmp_path):
    save_file({"h": np.array([1.5, -2.0, 65504.0], np.float16), "s": np.array([1e-3, 7.0], np.float32)},
              str(tmp_path / "x.safetensors"))
    t = open_safetensors(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(to_float32(t["h"]), np.array([1.5, -2.0, 65504.0], np.float32))
    s = to_float32(t["s"])
    assert s.dtype == np.float32 and s.flags.writeable and not np.shares_memory(s, t["s"])
    np.testing.assert_array_equal(s, np.array([1e-3, 7.0], np.float32))


# ---------------------------------------------------------------------------------------------
# malformed files: each a CheckpointError naming the file


def one_tensor(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"a": {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


@pytest.mark.parametrize("content", [b"", b"\x01", b"\x08\x00\x00\x00\x00\x00\x00"])
def test_file_too_short(tmp_path, content):
    path = tmp_path / "short.safetensors"
    path.write_bytes(content)
    assert_bad(path)


def test_header_length_past_end_of_file(tmp_path):
    header = json.dumps(one_tensor()).encode()
    assert_bad(write_raw(tmp_path / "x.safetensors", header, b"\0" * 8, n=len(header) + 9))
    assert_bad(write_raw(tmp_path / "y.safetensors", b"{}", n=1000))


@pytest.mark.parametrize("n", [100_000_001, 2**32, 2**63, 2**64 - 1])
def test_header_length_over_limit(tmp_path, n):
    assert_bad(write_raw(tmp_path / "x.safetensors", b"{}" + b" " * 30, n=n))


def test_header_length_over_limit_is_not_read(tmp_path):
    """A 150 MB header length in a (sparse) 200 MB file is refused before anything is read."""
    path = write_raw(tmp_path / "sparse.safetensors", b"{", n=150_000_000)
    with open(path, "r+b") as f:
        f.truncate(200_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as e:
            open_safetensors(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path in str(e.value) and peak < 10_000_000


@pytest.mark.parametrize("header", [b'{"\xff\xfe": 1}', b"{\xc3\x28}", b'{"a": "\xed\xa0\x80"}'])
def test_header_not_utf8(tmp_path, header):
    assert_bad(write_raw(tmp_path / "x.safetensors", header), "UTF-8")


@pytest.mark.parametrize("header", [b" {}", b"[]", b"\x00{}", b"", b"null", b'"{}"', b"\xef\xbb\xbf{}"])
def test_header_not_an_object(tmp_path, header):
    assert_bad(write_raw(tmp_path / "x.safetensors", header))


@pytest.mark.parametrize("header", [b"{", b'{"a": }', b"{'a': 1}", b'{"a": 1,}', b"{}}", b"{} x",
                                    b'{"a": {"dtype": "F32"', b"{" * 100_000])
def test_header_invalid_json(tmp_path, header):
    assert_bad(write_raw(tmp_path / "x.safetensors", header), "JSON")


@pytest.mark.parametrize("dtype", ["F128", "f32", "bf16", "Q4_0", "F8_E4M3FNUZ", "", "C64", None, 32])
def test_unknown_dtype(tmp_path, dtype):
    assert_bad(write_raw(tmp_path / "x.safetensors", one_tensor(dtype=dtype), b"\0" * 8), "dtype", "'a'")


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}])
def test_unhashable_dtype(tmp_path, dtype):
    assert_bad(write_raw(tmp_path / "x.safetensors", one_tensor(dtype=dtype), b"\0" * 8), "dtype")


@pytest.mark.parametrize("shape", [[-1], [2, -1], [1.5], [2.0], ["2"], [True, 2], [None], "2", 2, None, [[2]]])
def test_bad_shape(tmp_path, shape):
    header = {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 8]}}
    assert_bad(write_raw(tmp_path / "x.safetensors", header, b"\0" * 8), "shape")


@pytest.mark.parametrize("offsets", [[0], [0, 4, 8], [-8, 0], ["0", "8"], [0.0, 8.0], None, [0, True]])
def test_bad_data_offsets(tmp_path, offsets):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": offsets}}
    assert_bad(write_raw(tmp_path / "x.safetensors", header, b"\0" * 8), "data_offsets")


@pytest.mark.parametrize("info", [[], "F32", None, {"dtype": "F32", "shape": [2]},
                                  {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "extra": 1}])
def test_bad_tensor_entry(tmp_path, info):
    assert_bad(write_raw(tmp_path / "x.safetensors", {"a": info}, b"\0" * 8), "'a'")


def two_tensors(a_offsets, b_offsets):
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": a_offsets},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": b_offsets}}


def test_offsets_valid_control(tmp_path):
    """The layout the bad-offset tests below perturb is itself valid, in either order."""
    data = np.arange(4, dtype="<f4").tobytes()
    t = open_safetensors(write_raw(tmp_path / "x.safetensors", two_tensors([0, 8], [8, 16]), data))
    np.testing.assert_array_equal(t["b"], [2, 3])
    t = open_safetensors(write_raw(tmp_path / "y.safetensors", two_tensors([8, 16], [0, 8]), data))
    np.testing.assert_array_equal(t["a"], [2, 3])


@pytest.mark.parametrize("a,b,size", [([0, 8], [4, 12], 12),      # overlap
                                      ([0, 8], [0, 8], 8),        # the same bytes twice
                                      ([0, 8], [12, 20], 20),     # gap
                                      ([4, 12], [12, 20], 20),    # not starting at 0
                                      ([0, 8], [8, 12], 12),      # b needs 8 bytes, spans 4
                                      ([0, 12], [12, 20], 20),    # a needs 8 bytes, spans 12
                                      ([8, 0], [8, 16], 16)])     # end before begin
def test_bad_offsets_layout(tmp_path, a, b, size):
    assert_bad(write_raw(tmp_path / "x.safetensors", two_tensors(a, b), b"\0" * size))


def test_offsets_not_matching_shape(tmp_path):
    msg = assert_bad(write_raw(tmp_path / "x.safetensors", one_tensor(shape=(3,), offsets=(0, 8)), b"\0" * 8))
    assert "'a'" in msg
    assert_bad(write_raw(tmp_path / "y.safetensors", one_tensor(dtype="BF16", shape=(2,), offsets=(0, 8)),
                         b"\0" * 8))


def test_duplicate_tensor_names(tmp_path):
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    header = ('{"a": %s, "a": %s}' % (entry, entry.replace("[0, 4]", "[4, 8]"))).encode()
    assert_bad(write_raw(tmp_path / "x.safetensors", header, b"\0" * 8), "'a'")
    # the same entry twice: a plain json.loads would keep one and read a valid-looking file
    header = ('{"a": %s, "b": %s, "a": %s}' % (entry, entry.replace("[0, 4]", "[4, 8]"), entry)).encode()
    assert_bad(write_raw(tmp_path / "y.safetensors", header, b"\0" * 8), "'a'")


def test_truncated_data_is_caught_at_open(tmp_path):
    path = str(tmp_path / "x.safetensors")
    save_file({"a": np.arange(10, dtype=np.float32), "b": np.arange(3, dtype=np.int64)}, path)
    size = os.path.getsize(path)
    for cut in (1, 7, 24, 64):
        with open(path, "r+b") as f:
            f.truncate(size - cut)
        assert_bad(path)
        size -= cut


@pytest.mark.parametrize("extra", [b"\0", b"\0" * 8, b"trailing garbage"])
def test_trailing_bytes(tmp_path, extra):
    path = str(tmp_path / "x.safetensors")
    save_file({"a": np.arange(10, dtype=np.float32)}, path)
    with open(path, "ab") as f:
        f.write(extra)
    assert_bad(path)


@pytest.mark.parametrize("metadata", [{"a": 1}, {"a": None}, "x", [1]])
def test_bad_metadata(tmp_path, metadata):
    assert_bad(write_raw(tmp_path / "x.safetensors", {"__metadata__": metadata}), "__metadata__")


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        open_safetensors(str(tmp_path))  # a folder
    assert str(tmp_path) in str(e.value)


def test_integer_literal_over_the_digit_limit(tmp_path):
    header = b'{"__metadata__": {"a": "b"}, "x": ' + b"9" * 5000 + b"}"
    assert_bad(write_raw(tmp_path / "x.safetensors", header))


# ---------------------------------------------------------------------------------------------
# random corruption of valid files: a correct read, or CheckpointError, nothing else


def check_read_against_bytes(buf, tensors):
    """Every tensor read is exactly what the (corrupted) file's own header says, byte for byte."""
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    header.pop("__metadata__", None)
    assert sorted(header) == sorted(tensors)
    total = 0
    for name, info in header.items():
        a = tensors[name]
        begin, end = info["data_offsets"]
        assert a.shape == tuple(info["shape"]) and a.dtype == np.dtype(ST_DTYPES[info["dtype"]])
        assert a.nbytes == end - begin == a.size * a.itemsize
        assert a.tobytes() == buf[8 + n + begin:8 + n + end]
        total += end - begin
    assert 8 + n + total == len(buf)


json_bytes = st.sampled_from(list(b'0123456789{}[]",:-. \t\neEFIUBL_abc\x00\xff'))


@st.composite
def mutations(draw, size, n):
    kinds = ["truncate", "flip", "flip_json", "length", "length_delta"] + (["flip_data"] if size > 8 + n else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip_data":  # tensor bytes: any value is a valid read
        return kind, draw(st.lists(st.tuples(st.integers(8 + n, size - 1), st.integers(0, 255)), min_size=1,
                                   max_size=4))
    if kind in ("flip", "flip_json"):
        values = st.integers(0, 255) if kind == "flip" else json_bytes
        return kind, draw(st.lists(st.tuples(st.integers(8, 8 + n - 1), values), min_size=1, max_size=4))
    if kind == "length":
        return kind, draw(st.integers(0, 2**64 - 1))
    return kind, draw(st.integers(-n, 64))


def apply_mutation(buf, mutation):
    kind, arg = mutation
    buf = bytearray(buf)
    if kind == "truncate":
        return bytes(buf[:arg])
    if kind.startswith("flip"):
        for at, value in arg:
            buf[at] = value
        return bytes(buf)
    n = int.from_bytes(buf[:8], "little")
    buf[:8] = (arg if kind == "length" else max(0, n + arg)).to_bytes(8, "little")
    return bytes(buf)


small_tensors = st.dictionaries(
    st.sampled_from(["a", "b", "w.0", "w.1"]),
    st.tuples(st.sampled_from([np.float32, np.float16, np.int64, np.uint8]),
              hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)),
    max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=small_tensors, bf16=st.booleans())
def test_corrupted_files_read_correctly_or_raise_checkpoint_error(data, spec, bf16):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        tensors = {name: np.arange(int(np.prod(shape)), dtype=dt).reshape(shape) for name, (dt, shape) in spec.items()}
        if bf16:  # safetensors.numpy cannot write bf16: a hand-written header instead
            raw = {name: np.asarray(a, np.float32).astype(ml_dtypes.bfloat16) for name, a in tensors.items()}
            header, offset, blob = {}, 0, b""
            for name, a in raw.items():
                header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
                offset, blob = offset + a.nbytes, blob + a.tobytes()
            write_raw(path, header, blob)
        else:
            save_file(tensors, path)
        buf = open(path, "rb").read()
        n = int.from_bytes(buf[:8], "little")
        mutation = data.draw(mutations(len(buf), n), label="mutation")
        mutated = apply_mutation(buf, mutation)
        with open(path, "wb") as f:
            f.write(mutated)
        try:
            got = open_safetensors(path)
        except CheckpointError as e:
            assert path in str(e)
            event(f"{mutation[0]}: CheckpointError")
            return
        event(f"{mutation[0]}: read")
        check_read_against_bytes(mutated, got)


# ---------------------------------------------------------------------------------------------
# checkpoint folders


def test_pickle_only_folder(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(str(tmp_path))
    assert "safetensors" in str(e.value) and "pytorch_model.bin" in str(e.value)
    shutil.copy(os.path.join(CHECKPOINTS, "mha_f32_tied", "config.json"), tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(str(tmp_path))


def test_empty_folder_and_unindexed_shards(tmp_path):
    with pytest.raises(CheckpointError):
        open_checkpoint(str(tmp_path))
    for i in (1, 2):
        save_file({f"t{i}": np.zeros(2, np.float32)}, str(tmp_path / f"model-0000{i}-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match="index"):
        open_checkpoint(str(tmp_path))


def test_single_file_under_another_name(tmp_path):
    save_file({"t": np.arange(3, dtype=np.float32)}, str(tmp_path / "weights.safetensors"))
    np.testing.assert_array_equal(open_checkpoint(str(tmp_path))["t"], [0, 1, 2])


@pytest.fixture
def sharded_copy(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(os.path.join(CHECKPOINTS, "mqa_bf16_sharded"), folder)
    index_path = folder / "model.safetensors.index.json"
    with open(index_path) as f:
        index = json.load(f)
    return folder, index_path, index


def test_sharded_copy_loads(sharded_copy):
    folder, _, index = sharded_copy
    tensors = open_checkpoint(str(folder))
    assert sorted(tensors) == sorted(index["weight_map"])
    assert all(t.dtype == np.dtype(ml_dtypes.bfloat16) for t in tensors.values())
    assert len(set(index["weight_map"].values())) == 10


def test_index_names_missing_shard(sharded_copy):
    folder, index_path, index = sharded_copy
    shard = index["weight_map"]["model.norm.weight"]
    os.remove(folder / shard)
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(str(folder))
    assert shard in str(e.value) and str(index_path) in str(e.value)


def test_index_names_nonexistent_shard(sharded_copy):
    folder, index_path, index = sharded_copy
    index["weight_map"]["model.norm.weight"] = "model-00011-of-00010.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00011-of-00010.safetensors"):
        open_checkpoint(str(folder))


def test_index_lists_tensor_not_in_its_shard(sharded_copy):
    folder, index_path, index = sharded_copy
    wm = index["weight_map"]
    name = "model.norm.weight"
    wm[name] = next(s for s in sorted(set(wm.values())) if s != wm[name])  # another, existing shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(str(folder))
    assert name in str(e.value) and wm[name] in str(e.value)


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"weight_map": []}', b'{"weight_map": {"a": 1}}', b"\xff",
                                     b'{"weight_map": {"a": "../model.safetensors"}}'])
def test_bad_index(sharded_copy, content):
    folder, index_path, _ = sharded_copy
    index_path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(str(folder))
    assert str(index_path) in str(e.value)


def test_load_model_reports_every_mismatch_at_once(tmp_path):
    src = os.path.join(CHECKPOINTS, "mha_f32_tied")
    tensors = load_file(os.path.join(src, "model.safetensors"))  # float32: the package can read it
    missing = "model.layers.1.self_attn.k_proj.bias"
    reshaped = "model.layers.2.mlp.up_proj.weight"
    extra = "model.layers.0.self_attn.rotary_extra.weight"
    assert missing in tensors and reshaped in tensors and tensors[reshaped].shape == (160, 64)
    del tensors[missing]
    tensors[reshaped] = np.ascontiguousarray(tensors[reshaped][:, :32])
    tensors[extra] = np.zeros((4, 4), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "config.json")
    with pytest.raises(CheckpointError) as e:
        load_model(str(tmp_path))
    msg = str(e.value)
    assert missing in msg and reshaped in msg and extra in msg
    assert "[160, 64]" in msg and "[160, 32]" in msg and "3 problems" in msg
    assert str(tmp_path) in msg


def test_load_model_of_resaved_checkpoint_works(tmp_path):
    """The control for the test above: re-saving unmodified tensors gives a loadable model."""
    src = os.path.join(CHECKPOINTS, "mha_f32_tied")
    save_file(load_file(os.path.join(src, "model.safetensors")), str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "config.json")
    model = load_model(str(tmp_path))
    logits = model.forward(np.array([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size) and np.isfinite(logits).all()


def test_load_model_rejects_integer_weights(tmp_path):
    src = os.path.join(CHECKPOINTS, "mha_f32_tied")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="model.norm.weight.*I32"):
        load_model(str(tmp_path))
