"""Tests for apa.batch: safe zip extraction (slip, links, bombs, caps), the references CSV, the
results CSV (formula escaping) and run_batch end to end with a fake scorer."""

from __future__ import annotations

import csv
import io
import struct
import time
import zipfile
from pathlib import Path

import pytest

from apa import batch
from webapp import handlers


def test_zip_slip_is_rejected(tmp_path, make_zip):
    for evil in ("../evil.wav", "a/../../evil.wav", "/abs/evil.wav", "..\\evil.wav", "C:/evil.wav"):
        z = make_zip(tmp_path / "evil.zip", {"ok.wav": b"x", evil: b"x"})
        dest = tmp_path / "out"
        with pytest.raises(batch.UnsafeZipError, match="unsafe path"):
            batch.safe_extract_zip(z, dest)
        assert not (tmp_path / "evil.wav").exists()
        assert not dest.exists() or not any(dest.rglob("*.wav"))  # nothing written at all


def test_zip_symlink_is_rejected(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link.wav")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(batch.UnsafeZipError, match="link"):
        batch.safe_extract_zip(z, tmp_path / "out")


def test_zip_caps(tmp_path, make_zip):
    z = make_zip(tmp_path / "many.zip", {f"{i}.wav": b"x" for i in range(12)})
    with pytest.raises(batch.UnsafeZipError, match="entries"):
        batch.safe_extract_zip(z, tmp_path / "o1", max_members=10)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.wav", b"\0" * 5_000_000)  # compresses to a few KB
    assert big.stat().st_size < 100_000
    with pytest.raises(batch.UnsafeZipError, match="MB"):
        batch.safe_extract_zip(big, tmp_path / "o2", max_total_bytes=1_000_000)
    assert not any((tmp_path / "o2").rglob("*.wav")) if (tmp_path / "o2").exists() else True


def _lie_about_size(z: Path, declared: int) -> None:
    """Patch the central directory's uncompressed size of the zip's first member."""
    raw = bytearray(z.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = declared.to_bytes(4, "little")
    z.write_bytes(bytes(raw))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zipfile_yields_no_more_than_the_declared_size(tmp_path, compression):
    """The property safe_extract_zip relies on instead of a byte counter: a member whose header
    declares 10 bytes but holds 300 kB gives at most 10 bytes, then a CRC error."""
    z = tmp_path / "liar.zip"
    with zipfile.ZipFile(z, "w", compression=compression) as zf:
        zf.writestr("a.wav", b"\1" * 300_000)
    _lie_about_size(z, 10)
    got = 0
    with zipfile.ZipFile(z) as zf, pytest.raises(zipfile.BadZipFile, match="CRC"):
        with zf.open(zf.infolist()[0]) as src:
            while chunk := src.read(1 << 16):
                got += len(chunk)
    assert got <= 10


def test_zip_lying_about_its_size_is_rejected_and_leaves_nothing(tmp_path):
    z = tmp_path / "liar.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("b.wav", b"\2" * 1000)  # an honest member first: it is written, then removed
        zf.writestr("a.wav", b"\1" * 300_000)
    raw = bytearray(z.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")  # the last member's central-directory entry
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    z.write_bytes(bytes(raw))
    with pytest.raises(batch.BatchError, match="could not be unpacked"):
        batch.safe_extract_zip(z, tmp_path / "out", max_total_bytes=100_000)
    assert not [f for f in (tmp_path / "out").rglob("*") if f.is_file()]


def test_zip_skips_junk_and_keeps_audio(tmp_path, make_zip):
    z = make_zip(
        tmp_path / "ok.zip",
        {
            "class/a.wav": b"1",
            "__MACOSX/class/._a.wav": b"2",
            "class/.hidden.wav": b"3",
            "notes.pdf": b"4",
            "refs.csv": b"5",
        },
    )
    out = batch.safe_extract_zip(z, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == ["class/a.wav", "refs.csv"]


def test_read_references_formats(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("\ufefffile,text\na.wav,HELLO THERE\n\n b.wav , GOOD MORNING ,extra\nc.wav,\n", encoding="utf-8")
    assert batch.read_references(p) == [("a.wav", "HELLO THERE"), ("b.wav", "GOOD MORNING"), ("c.wav", "")]
    assert batch.read_references(b"a.wav;HI\n") == [("a.wav", "HI")]
    assert batch.read_references(b"a.wav\tHI\n") == [("a.wav", "HI")]
    with pytest.raises(batch.BatchError):
        batch.read_references(b"\xff\xfe\x00bad")
    with pytest.raises(batch.BatchError):
        batch.read_references(b"file,text\n")


def test_rows_to_csv_escapes_injection():
    rows = [
        batch.BatchRow(file="=cmd|' /C calc'!A0.wav", text="+HELLO", accuracy=7.5, error=""),
        batch.BatchRow(file="@x.wav", text="-1 TWO", error="=bad"),
        batch.BatchRow(file="ok.wav", text="WE CALL IT BEAR", accuracy=8.0),
    ]
    text = batch.rows_to_csv(rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == batch.COLUMNS
    assert parsed[1][0] == "'=cmd|' /C calc'!A0.wav" and parsed[1][1] == "'+HELLO" and parsed[1][2] == "7.5"
    assert parsed[2][0] == "'@x.wav" and parsed[2][1] == "'-1 TWO" and parsed[2][-1] == "'=bad"
    assert parsed[3][:3] == ["ok.wav", "WE CALL IT BEAR", "8.0"]
    for row in parsed[1:]:
        assert not any(c[:1] in "=+-@" for c in row if c)


def _deflated_zeros_zip(path: Path, name: str, size: int) -> Path:
    """A real zip bomb: one member of `size` zero bytes, deflated (~1000:1)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w", force_zip64=True) as f:
            block = bytes(1 << 22)
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)
    return path


def test_zip_bomb_over_the_default_cap(scorer_free, tmp_path):
    """A 0.2 MB zip whose member unpacks to more than MAX_ZIP_UNCOMPRESSED_BYTES (200 MB): the
    batch row says so, nothing is written, and it is quick."""
    bomb = _deflated_zeros_zip(tmp_path / "bomb.zip", "class/bomb.wav", batch.MAX_ZIP_UNCOMPRESSED_BYTES + 1)
    assert bomb.stat().st_size < 2_000_000
    refs = tmp_path / "r.csv"
    refs.write_text("bomb.wav,WE CALL IT BEAR\n")
    t0 = time.perf_counter()
    rows = batch.run_batch([bomb], refs, handlers.assess_file, workdir=tmp_path)
    assert time.perf_counter() - t0 < 5
    errors = {r.file: r.error for r in rows}
    assert "200 MB" in errors["bomb.zip"] and "rejected" in errors["bomb.zip"]
    assert not list(tmp_path.glob("apa-batch-*"))


def test_zip_bomb_lying_about_its_size_through_run_batch(scorer_free, tmp_path, monkeypatch):
    """Declared size patched to 1 kB under a 5 MB cap (lowered to keep the test fast): the member
    gives 1 kB, fails its CRC, the row reports the damaged archive and nothing is left."""
    monkeypatch.setattr(batch, "MAX_ZIP_UNCOMPRESSED_BYTES", 5_000_000)
    z = _deflated_zeros_zip(tmp_path / "liar.zip", "a.wav", 20_000_000)
    raw = bytearray(z.read_bytes())
    i = raw.find(b"PK\x01\x02")  # central directory: uncompressed size at +24 (or in the zip64 extra)
    raw[i + 24 : i + 28] = struct.pack("<I", 1000)
    z.write_bytes(bytes(raw))
    refs = tmp_path / "r.csv"
    refs.write_text("a.wav,HI\n")
    rows = batch.run_batch([z], refs, handlers.assess_file, workdir=tmp_path)
    assert rows[0].file == "liar.zip" and "could not be unpacked" in rows[0].error
    assert not list(tmp_path.glob("apa-batch-*"))


def test_zip_with_too_many_members_and_caps_across_zips(scorer_free, tmp_path, monkeypatch, make_zip):
    many = make_zip(tmp_path / "many.zip", {f"d/{i}.wav": b"" for i in range(batch.MAX_ZIP_MEMBERS + 1)})
    refs = tmp_path / "r.csv"
    refs.write_text("0.wav,HI\n")
    rows = batch.run_batch([many], refs, handlers.assess_file, workdir=tmp_path)
    assert f"limit is {batch.MAX_ZIP_MEMBERS}" in rows[0].error
    # the size cap is for all the archives of a request together
    monkeypatch.setattr(batch, "MAX_ZIP_UNCOMPRESSED_BYTES", 1_000_000)
    z1 = make_zip(tmp_path / "z1.zip", {"a.wav": bytes(600_000)})
    z2 = make_zip(tmp_path / "z2.zip", {"b.wav": bytes(600_000)})
    rows = batch.run_batch([z1, z2], refs, handlers.assess_file, workdir=tmp_path)
    errors = {r.file: r.error for r in rows}
    assert "z1.zip" not in errors and "rejected" in errors["z2.zip"]


def test_zip_slip_variants_through_run_batch(scorer_free, tmp_path, make_zip):
    outside = tmp_path / "evil.wav"
    for evil in ("../evil.wav", "/tmp/evil.wav", "a/../../evil.wav", "..\\..\\evil.wav", "C:\\evil.wav"):
        z = make_zip(tmp_path / "evil.zip", {"fine.wav": b"1", evil: b"2"})
        refs = tmp_path / "r.csv"
        refs.write_text("fine.wav,HI\n")
        (tmp_path / "w").mkdir(exist_ok=True)
        rows = batch.run_batch([z], refs, handlers.assess_file, workdir=tmp_path / "w")
        assert "unsafe path" in rows[0].error, evil
        assert not outside.exists() and not Path("/tmp/evil.wav").exists()


@pytest.fixture()
def scorer_free(monkeypatch, fake_scorer_class, use_scorer):
    use_scorer(fake_scorer_class())


def test_csv_cells_starting_with_formula_characters_are_escaped():
    cells = ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"http://x\")", "ok", " =1", "a\r=1+1", "b\n@x"]
    rows = [batch.BatchRow(file=c, text=c, error=c, accuracy=-1.0) for c in cells]
    text = batch.rows_to_csv(rows)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert len(parsed) == len(cells) + 1  # a line break inside a cell never starts a row
    for c, row in zip(cells, parsed[1:]):
        d = dict(zip(batch.COLUMNS, row))
        for col in ("file", "text", "error"):
            if c[:1] in "=+-@\t\r":
                assert d[col] == "'" + c, (col, d[col])
            else:
                assert d[col] == c
        assert d["accuracy"] == "-1.0"  # numbers stay numbers
