import h5py
import numpy as np
import pytest
import torch

from simgan.data.format import (
    DatasetError,
    DatasetWriter,
    copy_labels,
    image_key,
    images_to_tensor,
    label_keys,
    open_dataset,
    read_arrays,
    tensor_to_images,
    write_dataset,
)

GAZE_ATTRS = {"task": "gaze", "domain": "synthetic", "source": "test", "generator_version": "t1", "seed": 3}
HAND_ATTRS = {"task": "hand", "domain": "synthetic", "source": "test", "generator_version": "t1", "seed": 3}


def gaze_arrays(n=10, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return {
        "images": rng.integers(0, 256, (n, 35, 55), dtype=np.uint8),
        "gaze": g,
        "pupil": rng.uniform(0, 50, (n, 2)).astype(np.float32),
        "landmarks": rng.uniform(0, 50, (n, 16, 2)).astype(np.float32),
        "head_pose": rng.uniform(-20, 20, (n, 3)).astype(np.float32),
    }


def hand_arrays(n=6, s=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "depth": rng.uniform(-1, 1, (n, s, s)).astype(np.float32),
        "joints": rng.uniform(-1, 1, (n, 14, 3)).astype(np.float32),
        "mask": rng.integers(0, 2, (n, s, s), dtype=np.uint8),
    }


def test_roundtrip_gaze_and_metadata(tmp_path):
    path = tmp_path / "g.h5"
    arrays = gaze_arrays(700)
    arrays["labels/age"] = np.arange(700, dtype=np.int16)
    write_dataset(path, arrays, GAZE_ATTRS, chunk_rows=256, units={"age": "years"})
    with open_dataset(path) as ds:
        assert (ds.task, ds.domain, ds.n) == ("gaze", "synthetic", 700)
        assert ds.attrs["format_version"] == 1 and ds.attrs["seed"] == 3
        assert set(ds.keys()) == set(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(ds[k], v)
        chunks = list(ds.iter_chunks(["gaze"]))
        assert [len(c["gaze"]) for c in chunks] == [256, 256, 188]
        part = list(ds.iter_chunks(["images"], rows=slice(200, 300)))
        assert [len(c["images"]) for c in part] == [56, 44]
        np.testing.assert_array_equal(np.concatenate([c["images"] for c in part]), arrays["images"][200:300])
        cols = ds.label_columns()
        assert cols["age"][1] == "years"
        np.testing.assert_array_equal(cols["age"][0], arrays["labels/age"])
    assert image_key("hand") == "depth" and image_key("gaze") == "images"
    assert label_keys("gaze") == ("gaze",) and label_keys("generic") == ()


def test_default_chunking_is_along_n(tmp_path):
    path = tmp_path / "h.h5"
    write_dataset(path, hand_arrays(n=300, s=64), HAND_ATTRS)
    with h5py.File(path) as f:
        assert f["depth"].chunks == (256, 64, 64)
        assert f["joints"].chunks[0] == 256
        assert f["depth"].compression is None


@pytest.mark.parametrize(
    "mutate, key, expected",
    [
        (lambda a: a.pop("gaze"), "gaze", "missing"),
        (lambda a: a.update(gaze=a["gaze"].astype(np.float64)), "gaze", "expected float32 (N, 3), got float64 (10, 3)"),
        (lambda a: a.update(gaze=a["gaze"][:, :2]), "gaze", "got float32 (10, 2)"),
        (lambda a: a.update(images=a["images"].transpose(0, 2, 1)), "images", "expected uint8 (N, 35, 55)"),
        (lambda a: a.update(pupil=a["pupil"][:9]), "pupil", "expected N = 10"),
        (lambda a: a["head_pose"].__setitem__((4, 1), np.nan), "head_pose", "finite"),
        (lambda a: a["gaze"].__setitem__(2, [0.5, 0.5, 0.5]), "gaze", "unit vectors"),
        (lambda a: a.update(gaze_vec=a["gaze"]), "gaze_vec", "not part of the 'gaze' format"),
        (lambda a: a.update({"labels/bad": np.zeros((10, 2, 2), np.float32)}), "labels/bad", "label column"),
    ],
)
def test_write_validation_names_file_and_key(tmp_path, mutate, key, expected):
    path = tmp_path / "bad.h5"
    arrays = gaze_arrays()
    mutate(arrays)
    with pytest.raises(DatasetError) as e:
        write_dataset(path, arrays, GAZE_ATTRS)
    msg = str(e.value)
    assert msg.startswith(str(path)) and f"'{key}'" in msg and expected in msg, msg
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_zero_rows_and_bad_attrs(tmp_path):
    arrays = {k: v[:0] for k, v in gaze_arrays().items()}
    with pytest.raises(DatasetError, match="at least one row"):
        write_dataset(tmp_path / "z.h5", arrays, GAZE_ATTRS)
    with pytest.raises(DatasetError, match="attr 'task'.*'gaze'.*got 'eyes'"):
        write_dataset(tmp_path / "t.h5", gaze_arrays(), {**GAZE_ATTRS, "task": "eyes"})
    with pytest.raises(DatasetError, match="attr 'domain'"):
        write_dataset(tmp_path / "d.h5", gaze_arrays(), {**GAZE_ATTRS, "domain": "fake"})


def test_hand_depth_range_and_mask_shape(tmp_path):
    a = hand_arrays()
    a["depth"][2, 3, 3] = 1.5
    with pytest.raises(DatasetError, match=r"'depth'.*\[-1, 1\].*row 2"):
        write_dataset(tmp_path / "h.h5", a, HAND_ATTRS)
    a = hand_arrays()
    a["mask"] = a["mask"][:, :16, :16]
    with pytest.raises(DatasetError, match="'mask'"):
        write_dataset(tmp_path / "h.h5", a, HAND_ATTRS)


def _tamper(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (lambda f: f.__delitem__("gaze"), "key 'gaze': missing"),
        (
            lambda f: f.__setitem__("pupil", np.zeros((10, 3), np.float32)) if f.__delitem__("pupil") is None else None,
            "key 'pupil'",
        ),
        (lambda f: f["head_pose"].__setitem__((0, 0), np.inf), "key 'head_pose': expected finite"),
        (lambda f: f.attrs.__delitem__("domain"), "attr 'domain'"),
    ],
)
def test_open_validation(tmp_path, tamper, expected):
    path = tmp_path / "g.h5"
    write_dataset(path, gaze_arrays(), GAZE_ATTRS)
    _tamper(path, tamper)
    with pytest.raises(DatasetError) as e:
        open_dataset(path)
    assert str(e.value).startswith(str(path)) and expected in str(e.value), str(e.value)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "g.h5"
    write_dataset(path, gaze_arrays(200), GAZE_ATTRS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as e:
        read_arrays(path)
    assert str(e.value).startswith(str(path)) and "HDF5" in str(e.value)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "nope.h5")


def test_unlabeled_real_file(tmp_path):
    path = tmp_path / "real.h5"
    attrs = {**GAZE_ATTRS, "domain": "real"}
    images = gaze_arrays()["images"]
    with pytest.raises(DatasetError, match="'gaze': missing.*require_labels=False"):
        write_dataset(path, {"images": images}, attrs)
    write_dataset(path, {"images": images}, attrs, require_labels=False)
    with pytest.raises(DatasetError, match="'gaze': missing"):
        open_dataset(path)
    np.testing.assert_array_equal(read_arrays(path, require_labels=False)["images"], images)


def test_writer_streams_and_is_atomic(tmp_path):
    path = tmp_path / "g.h5"
    old = gaze_arrays(5, seed=1)
    write_dataset(path, old, GAZE_ATTRS)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), DatasetWriter(path, GAZE_ATTRS, chunk_rows=4) as w:
        w.append(gaze_arrays(8))
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    # A validation failure at close (N mismatch across keys) also keeps the old file.
    with pytest.raises(DatasetError, match="'gaze': expected N = 8"), DatasetWriter(path, GAZE_ATTRS) as w:
        a = gaze_arrays(8)
        w.append({"images": a["images"]})
        w.append({"gaze": a["gaze"][:3]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5"]
    parts = [gaze_arrays(7, seed=s) for s in range(3)]
    with DatasetWriter(path, GAZE_ATTRS, chunk_rows=4, compression="lzf") as w:
        for p in parts:
            w.append(p)
    got = read_arrays(path)
    for k in parts[0]:
        np.testing.assert_array_equal(got[k], np.concatenate([p[k] for p in parts]))


def test_copy_labels_is_byte_exact(tmp_path):
    src_path, dst_path = tmp_path / "s.h5", tmp_path / "r.h5"
    arrays = gaze_arrays(50)
    arrays["labels/subject"] = np.arange(50, dtype=np.int32) % 7
    write_dataset(src_path, arrays, GAZE_ATTRS, chunk_rows=16, units={"subject": "id"})
    with open_dataset(src_path) as src, DatasetWriter(dst_path, {**GAZE_ATTRS, "domain": "refined"}) as w:
        copy_labels(src, w)
        for block in src.iter_chunks(["images"]):
            w.append({"images": 255 - block["images"]})
    with open_dataset(dst_path) as dst:
        assert dst.domain == "refined" and dst.unit("labels/subject") == "id"
        for k, v in arrays.items():
            if k != "images":
                assert dst[k].tobytes() == v.tobytes()
        np.testing.assert_array_equal(dst["images"], 255 - arrays["images"])


def test_tensor_roundtrip_exact():
    gray = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(2, 0)
    t = images_to_tensor(gray, "gaze")
    assert t.shape == (2, 1, 16, 16) and t.dtype == torch.float32
    assert t.min() == -1.0 and t.max() == 1.0
    np.testing.assert_array_equal(tensor_to_images(t, "gaze"), gray)
    colour = np.random.default_rng(0).integers(0, 256, (3, 8, 9, 3), dtype=np.uint8)
    tc = images_to_tensor(colour, "generic")
    assert tc.shape == (3, 3, 8, 9)
    np.testing.assert_array_equal(tensor_to_images(tc, "generic"), colour)
    np.testing.assert_array_equal(tensor_to_images(torch.full((1, 1, 2, 2), 3.0), "gaze"), np.full((1, 2, 2), 255))
    depth = hand_arrays()["depth"]
    td = images_to_tensor(depth, "hand")
    assert td.shape == (6, 1, 32, 32)
    np.testing.assert_array_equal(tensor_to_images(td, "hand"), depth)
    assert tensor_to_images(td * 3, "hand").max() == 1.0
    with pytest.raises(DatasetError, match="'array'.*uint8"):
        images_to_tensor(depth, "gaze")


@pytest.mark.parametrize(
    "key, row, value, expected",
    [("head_pose", 37, [0.0, np.nan, 0.0], "finite values, got"), ("gaze", 40, [0.5, 0.5, 0.5], "unit vectors")],
)
def test_open_checks_every_label_row_block_by_block(tmp_path, monkeypatch, key, row, value, expected):
    import simgan.data.format as fmt

    path = tmp_path / "g.h5"
    write_dataset(path, gaze_arrays(n=50), GAZE_ATTRS)
    with h5py.File(path, "r+") as h5:  # damage a row past the first blocks, as a bad copy would
        h5[key][row] = value
    monkeypatch.setattr(fmt, "VALIDATE_ROWS", 16)
    with pytest.raises(DatasetError) as e:
        open_dataset(path)
    msg = str(e.value)
    assert f"key '{key}'" in msg and expected in msg and msg.endswith(f"at row {row}"), msg
