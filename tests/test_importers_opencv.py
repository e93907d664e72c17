"""The importers' OpenCV decoding and resizing: EXIF orientation, area means, 16-bit grey, bad
files named in the error, and the progress bar on stderr."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

from simgan.cli import main
from simgan.data.importers import crop_resize, decode_image, read_image
from simgan.data.importers.folder import FolderConfig, import_folder
from simgan.io import SimganError


def _quadrants(h=40, w=60) -> np.ndarray:
    """An RGB image whose four quadrants differ, so every flip and turn tells apart."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (250, 10, 10)
    a[: h // 2, w // 2 :] = (10, 250, 10)
    a[h // 2 :, : w // 2] = (10, 10, 250)
    a[h // 2 :, w // 2 :] = (240, 240, 20)
    return a


def _save_oriented(path, arr, orientation: int, **kw) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **kw)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_upright_as_pillow_does(tmp_path, suffix, orientation):
    path = tmp_path / f"o{orientation}{suffix}"
    _save_oriented(path, _quadrants(), orientation, **({"quality": 95} if suffix == ".jpg" else {}))
    with Image.open(path) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape == want.shape == ((60, 40, 3) if orientation >= 5 else (40, 60, 3))
    np.testing.assert_array_equal(got, want)  # the same libjpeg-turbo decodes both
    np.testing.assert_array_equal(decode_image(path, "L"), np.asarray(Image.fromarray(want).convert("L")))


def test_area_resize_is_the_block_mean_rounded_half_up():
    a = np.array([[0, 1, 2, 3, 200, 255], [4, 5, 6, 8, 100, 0], [9, 9, 9, 9, 7, 7], [9, 9, 9, 10, 7, 8]], np.uint8)
    sums = a.astype(int).reshape(2, 2, 3, 2).sum(axis=(1, 3))
    np.testing.assert_array_equal(crop_resize(a, (0, 0, 6, 4), (2, 3)), (sums + 2) // 4)
    f = a.astype(np.float32)
    np.testing.assert_allclose(crop_resize(f, (0, 0, 6, 4), (2, 3)), sums / 4.0, rtol=0, atol=1e-5)
    # a fractional shrink weights a pixel cut by the footprint by its share: 5 -> 2 columns
    row = np.array([[0, 10, 20, 30, 40]], np.float32)
    np.testing.assert_allclose(crop_resize(row, (0, 0, 5, 1), (1, 2)), [[(0 + 10 + 10) / 2.5, (10 + 30 + 40) / 2.5]])


def test_enlarging_and_mixed_resizes_keep_flat_images_flat_and_shape():
    flat = np.full((10, 8), 77, np.uint8)
    for out_hw in ((20, 16), (5, 16), (20, 4)):
        np.testing.assert_array_equal(crop_resize(flat, (0, 0, 8, 10), out_hw), np.full(out_hw, 77, np.uint8))
    rgb = np.zeros((10, 8, 3), np.uint8)
    assert crop_resize(rgb, (0, 0, 8, 10), (5, 16)).shape == (5, 16, 3)


def test_16bit_grey_png_is_scaled_to_8_bits(tmp_path):
    v = np.arange(0, 256, dtype=np.uint16).reshape(16, 16)
    raw = v * 257
    raw[0, 1] = 257 + 128  # 1.498 -> 1, rounded to nearest
    raw[0, 2] = 2 * 257 + 129  # 2.502 -> 3
    Image.fromarray(raw).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").dtype == np.uint16
    want = v.astype(np.uint8)
    want[0, 1], want[0, 2] = 1, 3
    np.testing.assert_array_equal(decode_image(tmp_path / "deep.png", "L"), want)
    np.testing.assert_array_equal(decode_image(tmp_path / "deep.png", "RGB"), np.stack([want] * 3, -1))


def test_grey_of_colour_is_pillows_convert_l(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "c.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "c.png", "L"), np.asarray(Image.fromarray(a).convert("L")))


def test_a_path_with_odd_characters_decodes(tmp_path):
    path = tmp_path / "é ü #[1] 眼.png"
    Image.fromarray(_quadrants()).save(path)
    np.testing.assert_array_equal(read_image(path), _quadrants())


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_quadrants()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("content", [b"not an image at all", _jpeg_bytes()[:400]], ids=["garbage", "truncated"])
def test_a_file_that_does_not_decode_is_named_in_the_error(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(SimganError, match=r"bad\.jpg: cannot decode image .*expected a readable image file"):
        decode_image(path, "L")
    Image.fromarray(_quadrants()).save(tmp_path / "good.png")
    with pytest.raises(SimganError, match=r"1 bad images in .*bad\.jpg: cannot decode image"):
        import_folder(tmp_path, tmp_path / "out.h5", FolderConfig(size=(40, 60), workers=1))
    with pytest.raises(SimganError, match="image file not found"):
        decode_image(tmp_path / "missing.png")


def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100 // 2 - 1)  # 2x the limit < 10000 pixels
    with pytest.raises(SimganError, match=r"big\.png: cannot decode image .*decompression bomb"):
        decode_image(tmp_path / "big.png", "L")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.setdefault(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = dict(f.attrs)
    return out


def test_folder_import_with_the_progress_bar_writes_the_same_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["import", "folder", str(tmp_path / "imgs"), "--size", "15x25", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "plain.h5")]) == 0
    plain = capsys.readouterr()
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main([*args, "--out", str(tmp_path / "bar.h5")]) == 0
    with_bar = capsys.readouterr()
    assert "import imgs" in terminal.getvalue() and "7/7" in terminal.getvalue()
    assert with_bar.out == plain.out.replace("plain.h5", "bar.h5")
    a, b = _datasets(tmp_path / "plain.h5"), _datasets(tmp_path / "bar.h5")
    assert a.keys() == b.keys()
    for key in a:
        if key == "attrs":
            assert {k: str(v) for k, v in a[key].items()} == {k: str(v) for k, v in b[key].items()}
        else:
            np.testing.assert_array_equal(a[key], b[key])
