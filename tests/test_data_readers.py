"""CSV, NPZ and IDX readers: round trips and every bad-input error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from nnforge.data import iter_csv, read_csv, read_idx, read_npz, write_idx
from nnforge.data.tabular import csv_header
from nnforge.errors import DataError, DTypeError, ShapeError

# -- CSV ------------------------------------------------------------------------------------


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    path = tmp_path / "t.csv"
    rows = ["a,b,label,c"] + [f"{r[0]!r},{r[1]!r},{c},{r[2]!r}" for r, c in
                              zip(x[:, :3].tolist(), y)]
    _write(path, "\n".join(rows) + "\n")
    return path, x[:, :3], y


def test_csv_round_trip_by_label_name_and_index(table):
    path, x, y = table
    for label in ("label", 2, -2):
        got_x, got_y = read_csv(path, label_column=label)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    all_x, none = read_csv(path)
    assert none is None and all_x.shape == (50, 4)


def test_csv_header_modes_and_delimiter(tmp_path):
    data = "1;2;0.5\n3;4;1.5\n"
    p = _write(tmp_path / "s.csv", data)
    x, y = read_csv(p, label_column=-1, delimiter=";")  # inferred: no header
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    assert y.dtype == np.float32 and y.tolist() == [0.5, 1.5]
    x, y = read_csv(p, label_column=0, delimiter=";", header=True)  # first row taken as names
    assert x.shape == (1, 2) and y.tolist() == [3]
    q = _write(tmp_path / "h.csv", '\ufeff"x 1",x2\n\n1,2\n\n3,4\n')  # BOM, quotes, blank lines
    x, y = read_csv(q, label_column="x 1")
    assert x[:, 0].tolist() == [2, 4] and y.tolist() == [1, 3]


def test_csv_string_labels_without_header_are_not_a_header(tmp_path):
    p = _write(tmp_path / "iris.csv", "5.1,3.5,setosa\n6.2,2.9,virginica\n")
    x, y = read_csv(p, label_column=-1)
    assert x.shape == (2, 2) and y.tolist() == ["setosa", "virginica"]
    h = _write(tmp_path / "iris_h.csv", "len,wid,species\n5.1,3.5,setosa\n6.2,2.9,virginica\n")
    assert read_csv(h, label_column="species")[1].tolist() == ["setosa", "virginica"]


def test_iter_csv_streams_chunks(table):
    path, x, y = table
    chunks = list(iter_csv(path, label_column="label", chunk_rows=7))
    assert [len(c[0]) for c in chunks] == [7] * 7 + [1]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), y)
    assert chunks[0][1].dtype == np.float32  # the integral check needs the whole column


def test_iter_csv_is_lazy(tmp_path):
    """A chunk comes out before later lines are even parsed: big files stream."""
    lines = ["a,b"] + [f"{i},{i}" for i in range(100)] + ["1,oops"]
    p = _write(tmp_path / "big.csv", "\n".join(lines) + "\n")
    chunks = iter_csv(p, chunk_rows=40)
    first, _ = next(chunks)
    assert first.shape == (40, 2)
    next(chunks)
    with pytest.raises(DataError, match="line 102, column 2 \\('b'\\): expected a number, "
                                        "found 'oops'"):
        next(chunks)


@pytest.mark.parametrize("text,match", [
    ("a,b,c\n1,2,3\n4,abc,6\n", r"bad.csv, line 3, column 2 \('b'\): expected a number, "
                                r"found 'abc'"),
    ("a,b,c\n1,2,3\n4,,6\n", r"line 3, column 2 \('b'\): expected a number, found an empty "
                             r"cell \(read_csv\(missing='nan'\) reads missing values as NaN\)"),
    ("a,b,c\n1,2,3\n4,5\n", r"line 3: expected 3 columns, found 2"),
    ("a,b,c\n1,2,3\n4,5,6,7\n", r"line 3: expected 3 columns, found 4"),
    ("a,b,c\n1,2\n3,4\n", r"line 2: expected 3 columns, found 2"),  # every row short
    ("1,2,3\n4,5,x\n", r"line 2, column 3: expected a number, found 'x'"),
])
def test_csv_bad_cells_name_file_line_and_column(tmp_path, text, match):
    p = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match):
        read_csv(p)


def test_csv_error_in_string_label_mode(tmp_path):
    p = _write(tmp_path / "s.csv", "a,b,y\n1,2,cat\n3,x,dog\n4,5\n")
    with pytest.raises(DataError, match="line 4: expected 3 columns, found 2"):
        read_csv(p, label_column="y")
    p = _write(tmp_path / "s.csv", "a,b,y\n1,2,cat\n3,x,dog\n")
    with pytest.raises(DataError, match=r"line 3, column 2 \('b'\): expected a number"):
        read_csv(p, label_column="y")


def test_csv_argument_errors(tmp_path, table):
    path, _, _ = table
    with pytest.raises(DataError, match="no such file"):
        read_csv(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"one of \['a', 'b', 'label', 'c'\], found 'kind'"):
        read_csv(path, label_column="kind")
    with pytest.raises(DataError, match=r"in \[-4, 3\] .* found 4"):
        read_csv(path, label_column=4)
    with pytest.raises(DataError, match="header"):
        read_csv(path, label_column="label", header=False)
    with pytest.raises(DataError, match="header to be True, False or 'infer'"):
        read_csv(path, header="yes")
    with pytest.raises(DataError, match="chunk_rows"):
        next(iter_csv(path, chunk_rows=0))
    with pytest.raises(DataError, match="at least one data row"):
        read_csv(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match="at least one data row"):
        read_csv(_write(tmp_path / "head.csv", "a,b\n"), header=True)
    with pytest.raises(DataError, match="feature columns"):
        read_csv(_write(tmp_path / "one.csv", "1\n2\n"), label_column=0)
    (tmp_path / "latin1.csv").write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_csv(tmp_path / "latin1.csv")


# -- NPZ ------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    y = np.array([0, 1, 1, 0], dtype=np.int32)
    np.savez(tmp_path / "a.npz", X=x, y=y)
    got_x, got_y = read_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(got_x, x)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    np.savez(tmp_path / "b.npz", x=x.astype(np.uint8))  # lowercase key, no labels
    got_x, got_y = read_npz(tmp_path / "b.npz")
    assert got_y is None and got_x.dtype == np.float32
    np.savez_compressed(tmp_path / "c.npz", images=x, labels=y.astype(np.float64))
    got_x, got_y = read_npz(tmp_path / "c.npz", x_key="images", y_key="labels")
    assert got_x.shape == (4, 3) and got_y.dtype == np.float32


def test_npz_errors(tmp_path):
    x = np.zeros((4, 2))
    np.savez(tmp_path / "k.npz", data=x)
    with pytest.raises(DataError, match=r"'X' or 'x', found \['data'\]"):
        read_npz(tmp_path / "k.npz")
    with pytest.raises(DataError, match="named 'inputs'"):
        read_npz(tmp_path / "k.npz", x_key="inputs")
    with pytest.raises(DataError, match="named 'target'"):
        read_npz(tmp_path / "k.npz", x_key="data", y_key="target")
    np.savez(tmp_path / "m.npz", X=x, y=np.zeros(3))
    with pytest.raises(ShapeError, match="expected y with 4 samples"):
        read_npz(tmp_path / "m.npz")
    np.savez(tmp_path / "o.npz", X=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="plain numeric array"):
        read_npz(tmp_path / "o.npz")
    np.savez(tmp_path / "s.npz", X=np.array(["a", "b"]))
    with pytest.raises(DataError, match="numeric array"):
        read_npz(tmp_path / "s.npz")
    np.save(tmp_path / "single.npy", x)
    with pytest.raises(DataError, match="single .npy array"):
        read_npz(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="expected an .npz archive"):
        read_npz(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no such file"):
        read_npz(tmp_path / "nope.npz")


# -- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((5, 4, 3)) * 50).astype(dtype)
    write_idx(tmp_path / name, a)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    b = read_idx(tmp_path / name)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(a, b)
    write_idx(tmp_path / "plain", a, compress=True)  # gzip detected by magic, not by name
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), a)


def test_idx_reads_mnist_layout_written_by_hand(tmp_path):
    """Header built independently of write_idx: magic 0x00000803, dims big-endian."""
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    head = struct.pack(">4B3I", 0, 0, 0x08, 3, 2, 3, 4)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + images.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    labels = struct.pack(">4BI", 0, 0, 0x0C, 1, 2) + struct.pack(">2i", 7, -1)
    (tmp_path / "labels").write_bytes(labels)
    assert read_idx(tmp_path / "labels").tolist() == [7, -1]
    write_idx(tmp_path / "w", np.array([1], dtype=np.int32))
    assert (tmp_path / "w").read_bytes() == bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 1])


@pytest.mark.parametrize("data,match", [
    (b"\x00\x00", "4-byte IDX magic number"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic number 00 00"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", r"found 00 00 07 01"),
    (b"\x00\x00\x08\x00", "at least 1 dimension"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", r"12 header bytes .*\(truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", r"expected 11 bytes .* found 10 \(truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", r"found 10 \(trailing bytes\)"),
])
def test_idx_bad_files(tmp_path, data, match):
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(DataError, match=match):
        read_idx(tmp_path / "bad")


def test_idx_truncated_gzip_and_other_errors(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((100, 10), dtype=np.float32))
    whole = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="complete gzip stream"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DTypeError, match="found int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="1 to 32 dimensions"):
        write_idx(tmp_path / "x", np.float32(1.0))
    big_endian = np.arange(4, dtype=">f4")
    write_idx(tmp_path / "be", big_endian)
    np.testing.assert_array_equal(read_idx(tmp_path / "be"), [0, 1, 2, 3])


def test_csv_short_second_row_with_a_label_column_names_the_line(tmp_path):
    # the label cell of the row that decides the label kind is missing: was an IndexError
    path = _write(tmp_path / "r.csv", "a,b,y\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="line 2: expected 3 columns, found 2"):
        read_csv(path, label_column=-1)


@pytest.mark.parametrize("kwargs", [{"delimiter": ""}, {"delimiter": ",,"},
                                    {"delimiter": '"'}, {"chunk_rows": "5"}])
def test_csv_bad_delimiter_or_chunk_rows(tmp_path, kwargs):
    path = _write(tmp_path / "d.csv", "1,2\n")
    with pytest.raises(DataError, match="expected (delimiter|chunk_rows)"):
        list(iter_csv(path, **kwargs))


def test_csv_float_labels_beyond_int64_stay_float(tmp_path):
    path = _write(tmp_path / "big.csv", "a,y\n1,-1e30\n2,3\n")
    _, y = read_csv(path, label_column="y")
    assert y.dtype == np.float32 and y[0] == np.float32(-1e30)


@pytest.mark.parametrize("dims, words", [
    ((2**32 - 1,) * 4, f"expected {20 + (2**32 - 1) ** 4 * 8} bytes .*truncated"),
    ((1,) * 40, "expected 1 to 32 dimensions, found 40"),
])
def test_idx_huge_or_too_many_dims(tmp_path, dims, words):
    head = bytes([0, 0, 0x0E, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    (tmp_path / "h.idx").write_bytes(head + b"\0" * 8)
    with pytest.raises(DataError, match=words):
        read_idx(tmp_path / "h.idx")


def test_idx_gzip_bomb_is_not_decompressed_past_the_declared_size(tmp_path, monkeypatch):
    head = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10)
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(head + bytes(5_000_000)))
    read_sizes = []
    real = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read",
                        lambda self, n=-1: read_sizes.append(n) or real(self, n))
    with pytest.raises(DataError, match="found more \\(trailing bytes\\)"):
        read_idx(tmp_path / "b.idx.gz")
    assert max(read_sizes) <= 11


def test_write_idx_refuses_dims_beyond_uint32_and_reports_os_errors(tmp_path):
    with pytest.raises(DataError, match="below 2\\*\\*32"):
        write_idx(tmp_path / "w.idx", np.zeros((2**32, 0), np.uint8))
    with pytest.raises(DataError, match="cannot write IDX file"):
        write_idx(tmp_path, np.zeros(3, np.uint8))


def test_csv_field_over_the_csv_module_limit_is_a_data_error(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("a,b,y\n" + "1" * 200_000 + ",2,0\n3,4,1\n")
    with pytest.raises(DataError, match="big.csv"):
        read_csv(p, label_column="y")


@pytest.mark.parametrize("reader", [read_csv, read_npz, read_idx])
@pytest.mark.parametrize("path", [987654, None, 2.5])
def test_readers_refuse_non_paths_and_never_read_a_file_descriptor(reader, path):
    # open(0) would read stdin (and close it): an int is never taken as a descriptor
    with pytest.raises(DataError, match="expected the path of"):
        reader(path)


def test_npz_with_a_damaged_zip_header_is_a_data_error(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.zeros((2, 2)))
    raw = bytearray(p.read_bytes())
    cd = raw.index(b"PK\x01\x02")  # the central directory entry zipfile trusts
    raw[cd + 8] |= 1  # general-purpose flag: "encrypted"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="d.npz"):
        read_npz(p)
    raw[cd + 8] &= ~1
    raw[cd + 10] = 99  # a compression method zipfile does not know
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="d.npz"):
        read_npz(p)


def test_iter_csv_never_splits_a_quoted_field_that_spans_lines(tmp_path):
    # the record of line 3 spans lines 3-5 and straddles the boundary of 2-row chunks; a blank
    # line inside the quotes is part of the field
    p = _write(tmp_path / "q.csv", 'a,b,y\n1,2,cat\n3,4,"two\n\nlines, ""quoted"""\n'
                                   '"5",6,dog\n7,8,"x\ny"\n')
    chunks = list(iter_csv(p, label_column="y", chunk_rows=2))
    assert [len(c[0]) for c in chunks] == [2, 2]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]),
                                  [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert np.concatenate([c[1] for c in chunks]).tolist() == [
        "cat", 'two\n\nlines, "quoted"', "dog", "x\ny"]
    bad = _write(tmp_path / "bad.csv", 'a,b,y\n1,2,cat\n3,x,"two\nlines"\n')
    with pytest.raises(DataError, match=r"line 3, column 2 \('b'\): expected a number"):
        read_csv(bad, label_column="y")


def test_csv_unclosed_quote_names_the_line_it_opened_on(tmp_path):
    p = _write(tmp_path / "open.csv", 'a,b,y\n1,2,cat\n3,4,"dog\n5,6,cow\n')
    with pytest.raises(DataError, match=r"open.csv, line 3: expected the quoted field opened "
                                        r"there to close, found the end of the file"):
        read_csv(p, label_column="y")
    p = _write(tmp_path / "long.csv", 'a,b,y\n1,2,"cat\n' + "1,2,3\n" * 30_000)
    with pytest.raises(DataError, match=r"line 2: expected the quoted field opened there to "
                                        r"close within \d+ characters"):
        read_csv(p, label_column="y")


def test_csv_columns_by_name_reorder_and_leave_out_others(tmp_path):
    """columns= picks features by header name, in that order, in every chunk (a reordered
    file read by position gave wrong features)."""
    p = tmp_path / "r.csv"
    p.write_text("c,id,y,a,b\n3,x1,0,1,2\n6,x2,1,4,5\n9,x3,0,7,8\n")
    parts = list(iter_csv(p, label_column="y", columns=["a", "b", "c"], chunk_rows=2))
    x = np.concatenate([c[0] for c in parts])
    assert x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert np.concatenate([c[1] for c in parts]).tolist() == [0, 1, 0]
    assert read_csv(p, columns=["b", "a"])[0].tolist() == [[2, 1], [5, 4], [8, 7]]
    with pytest.raises(DataError, match=r"expected the columns \['a', 'z'\], found no column"):
        read_csv(p, columns=["a", "z"])
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    with pytest.raises(DataError, match="header"):
        read_csv(tmp_path / "n.csv", columns=["a"])


def test_csv_header_reads_names_and_first_row_only(tmp_path):
    (tmp_path / "h.csv").write_text("a, b\n1,x\n")
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    (tmp_path / "e.csv").write_text("")
    assert csv_header(tmp_path / "h.csv") == (["a", "b"], ["1", "x"])
    assert csv_header(tmp_path / "n.csv") == (None, ["1", "2"])
    assert csv_header(tmp_path / "e.csv") == (None, None)
