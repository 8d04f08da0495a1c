"""Teacher batch scoring: many recordings (files and/or zip archives) + a CSV of file -> text.

Safety (uploads are untrusted):
* zip archives: every member name is checked before anything is written; absolute paths,
  drive letters, '..' components and symlinks reject the whole archive (zip-slip); the number
  of members and the total declared uncompressed size are capped. Declared sizes can lie (zip
  bombs), but Python's zipfile never yields more than a member's declared size: it stops there
  and checks the CRC, so a liar fails as a damaged archive and the declared total bounds what is
  written (tests/test_batch.py checks that property). Only audio files (and one CSV) are
  extracted, into a temporary folder that is removed when the request ends.
* the CSV is size-capped and read as text only; cells of the result CSV that start with
  = + - @ tab or CR are prefixed with an apostrophe (CSV injection, see apa.render.csv_cell),
  and cells holding a line break are quoted (CRLF rows), so no cell can start a new row.
* one bad file (undecodable, silent, no reference text, ...) becomes an error in its row; it
  never fails the batch.

CSV format: one row per recording, `file,text` (a header row with a first cell such as "file"
or "filename" is skipped; extra columns are ignored). `file` matches an uploaded file by its
path inside the zip, its name, or its name without extension (case-insensitive).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from apa.feedback import weakest_words
from apa.render import csv_cell
from apa.schema import Assessment

log = logging.getLogger(__name__)

MAX_BATCH_FILES = 100  # audio files scored per request
MAX_ZIP_MEMBERS = 1000  # entries in one archive (files and folders)
MAX_ZIP_UNCOMPRESSED_BYTES = 200_000_000  # all archives of a request, bytes written (200 MB, as the message says)
MAX_CSV_BYTES = 1024 * 1024
SCORE_DECIMALS = 2  # sentence scores in the table / CSV
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".flac", ".webm", ".aac", ".aif", ".aiff", ".mp4", ".wma"}
)
CSV_EXTENSIONS = frozenset({".csv", ".tsv", ".txt"})
HEADER_NAMES = frozenset({"file", "filename", "file_name", "path", "audio", "recording", "wav", "utt", "utt_id", "id"})


class BatchError(ValueError):
    """A problem with the whole request (no CSV, unreadable CSV, too many files); str() is for the user."""


class UnsafeZipError(BatchError):
    """An archive that would write outside its folder, or is too big: rejected whole."""


@dataclass
class BatchRow:
    file: str
    text: str = ""
    accuracy: float | None = None
    fluency: float | None = None
    prosodic: float | None = None
    completeness: float | None = None
    total: float | None = None
    weakest_words: str = ""
    heard_instead: str = ""  # "WORD: R heard as L (62%); ..." for low-scoring phones heard as another
    word_times: str = ""  # "WORD 0.31-0.52; ..." seconds (empty when the recording was not aligned)
    error: str = ""


COLUMNS = [f.name for f in fields(BatchRow)]


# --------------------------------------------------------------------------------- zip


def _member_path(name: str) -> PurePosixPath:
    """The relative path of a zip member, or UnsafeZipError for anything that could escape."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if not norm or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in p.parts or "\x00" in norm:
        raise UnsafeZipError(f'The zip file was rejected: it contains an unsafe path ("{name}").')
    return p


def safe_extract_zip(
    zip_path: str | Path,
    dest: str | Path,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_total_bytes: int = MAX_ZIP_UNCOMPRESSED_BYTES,
    extensions: Iterable[str] = AUDIO_EXTENSIONS | CSV_EXTENSIONS,
) -> list[Path]:
    """Extract the audio (and CSV) members of a zip into dest; returns their paths.

    Raises UnsafeZipError (nothing is written) for path traversal, absolute paths, symlinks,
    too many members or a declared size over the cap; BatchError (and removes what was written)
    if it is not a zip or a member is damaged, encrypted or not the size it declares.
    """
    dest = Path(dest).resolve()
    exts = {e.lower() for e in extensions}
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BatchError(f'"{Path(zip_path).name}" is not a valid zip file.') from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UnsafeZipError(
                f"The zip file was rejected: it has {len(infos)} entries (the limit is {max_members})."
            )
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        declared = 0
        for info in infos:
            rel = _member_path(info.filename)  # checked for every member, even skipped ones
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeZipError(f'The zip file was rejected: it contains a link ("{info.filename}").')
            if info.is_dir() or rel.suffix.lower() not in exts:
                continue
            if "__MACOSX" in rel.parts or any(part.startswith(".") for part in rel.parts):
                continue
            target = (dest / Path(*rel.parts)).resolve()
            if not target.is_relative_to(dest):
                raise UnsafeZipError(f'The zip file was rejected: it contains an unsafe path ("{info.filename}").')
            declared += info.file_size
            plan.append((info, target))
        if declared > max_total_bytes:
            raise UnsafeZipError(
                f"The zip file was rejected: it unpacks to {declared / 1e6:.0f} MB "
                f"(the limit is {max_total_bytes / 1e6:.0f} MB)."
            )
        out: list[Path] = []
        try:
            for info, target in plan:
                target.parent.mkdir(parents=True, exist_ok=True)
                out.append(target)
                # At most info.file_size bytes come out (then zipfile checks the CRC): no byte
                # counter is needed beyond the declared total above.
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 16)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:  # damaged, lying or encrypted
            for p in out:
                p.unlink(missing_ok=True)
            raise BatchError(f'"{Path(zip_path).name}" could not be unpacked ({exc}).') from exc
    return out


# --------------------------------------------------------------------------------- CSV in


def read_references(source: str | Path | bytes) -> list[tuple[str, str]]:
    """(file, text) pairs from a CSV (comma, semicolon or tab separated; UTF-8, BOM allowed).

    A first row whose first cell is a header name ("file", "filename", ...) is skipped. Rows
    with an empty file cell are skipped; an empty text is kept (that row will get an error).
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            if path.stat().st_size > MAX_CSV_BYTES:
                raise BatchError(f"The CSV file is too large (the limit is {MAX_CSV_BYTES // 1024} KB).")
            data = path.read_bytes()
        except OSError as exc:  # gone (uploads are deleted after a request), unreadable, a folder
            raise BatchError(f'The CSV file "{path.name}" could not be read; please upload it again.') from exc
    if len(data) > MAX_CSV_BYTES:
        raise BatchError(f"The CSV file is too large (the limit is {MAX_CSV_BYTES // 1024} KB).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchError("The CSV file must be UTF-8 text (file,text on each line).") from exc
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    delim = max([",", ";", "\t"], key=first.count) if first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim))
    pairs: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row]
        if not cells or not cells[0]:
            continue
        if i == 0 and cells[0].lower().lstrip("#") in HEADER_NAMES:
            continue
        pairs.append((cells[0], " ".join(cells[1:2]).strip()))
    if not pairs:
        raise BatchError("The CSV file lists no recordings (expected lines of: file,text).")
    if len(pairs) > MAX_BATCH_FILES:
        raise BatchError(f"The CSV lists {len(pairs)} recordings; the limit is {MAX_BATCH_FILES} per batch.")
    return pairs


# --------------------------------------------------------------------------------- matching


def _keys(name: str) -> list[str]:
    p = PurePosixPath(name.replace("\\", "/").strip().lower())
    keys = [str(p), p.name, p.stem]
    return list(dict.fromkeys(k for k in keys if k and k != "."))


class _Index:
    """Finds an audio file by relative path, file name or stem (case-insensitive)."""

    def __init__(self, files: Sequence[tuple[str, Path]]):
        self.files = list(files)
        self.by_key: dict[str, list[int]] = {}
        for i, (rel, _) in enumerate(self.files):
            for k in _keys(rel):
                self.by_key.setdefault(k, []).append(i)

    def find(self, name: str) -> tuple[int | None, str]:
        for k in _keys(name):
            hits = self.by_key.get(k, [])
            if len(hits) == 1:
                return hits[0], ""
            if len(hits) > 1:
                return None, f'"{name}" matches {len(hits)} uploaded files; use the path inside the zip.'
        return None, "File not found among the uploads."


# --------------------------------------------------------------------------------- run


def _error_message(exc: BaseException) -> str:
    """User-facing text for a per-row failure (apa.errors.user_error decides what is the user's)."""
    from apa.errors import user_error

    err = user_error(exc)
    if err is not None:
        return err[1]
    log.exception("batch: unexpected error", exc_info=exc)
    return f"This file could not be scored (internal error: {type(exc).__name__})."


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), SCORE_DECIMALS)


def row_from_assessment(file: str, a: Assessment) -> BatchRow:
    s = a.sentence
    return BatchRow(
        file=file,
        text=a.text,
        accuracy=_round(s.accuracy),
        fluency=_round(s.fluency),
        prosodic=_round(s.prosodic),
        completeness=_round(s.completeness),
        total=_round(s.total),
        weakest_words=" ".join(w.text for w in weakest_words(a, n=3)),
        heard_instead=heard_instead_cell(a),
        word_times=word_times_cell(a),
    )


def heard_instead_cell(a: Assessment) -> str:
    """The phones that scored below good and were most likely heard as another phone, with the
    word: "BEAR: R heard as L (62%); ..." ('' when none, or not aligned)."""
    from apa.annotate import top_heard_other
    from apa.schema import PHONE_ACCENTED_BELOW

    out = []
    for w in a.words:
        for p in w.phones:
            other = top_heard_other(p)
            if other is not None and p.score is not None and p.score < PHONE_ACCENTED_BELOW:
                out.append(f"{w.text}: {p.phone.rstrip('012')} heard as {other[0]} ({other[1]:.0%})")
    return "; ".join(out)


def word_times_cell(a: Assessment) -> str:
    """"WORD start-end; ..." in seconds, 2 decimals ('' when the words have no times)."""
    if not a.words or any(w.start is None or w.end is None for w in a.words):
        return ""
    return "; ".join(f"{w.text} {w.start:.2f}-{w.end:.2f}" for w in a.words)


def run_batch(
    uploads: Sequence[str | Path],
    csv_file: str | Path | None,
    score: Callable[[Path, str], Assessment],
    *,
    progress: Callable[[int, int, str], Any] | None = None,
    workdir: str | Path | None = None,
) -> list[BatchRow]:
    """Score every recording listed in the CSV; one row per CSV line, then one per unlisted file.

    uploads: audio files and/or zip archives (a CSV among them is used when csv_file is None).
    score(path, text): loads and scores one recording; its exceptions become row errors.
    progress(i, n, name): called before each recording.
    Temporary files (unpacked archives) live in a folder removed before returning.
    """
    tmp = Path(tempfile.mkdtemp(prefix="apa-batch-", dir=workdir))
    try:
        rows: list[BatchRow] = []
        audio: list[tuple[str, Path]] = []
        csvs: list[Path] = []
        total_zip_bytes = 0
        for n, up in enumerate(uploads or ()):
            path = Path(up)
            ext = path.suffix.lower()
            if ext == ".zip":
                sub = tmp / f"zip{n}"
                try:
                    members = safe_extract_zip(path, sub, max_total_bytes=MAX_ZIP_UNCOMPRESSED_BYTES - total_zip_bytes)
                except BatchError as exc:
                    rows.append(BatchRow(file=path.name, error=str(exc)))
                    continue
                for m in members:
                    total_zip_bytes += m.stat().st_size
                    if m.suffix.lower() in CSV_EXTENSIONS:
                        csvs.append(m)
                    else:
                        audio.append((m.relative_to(sub).as_posix(), m))
            elif ext in CSV_EXTENSIONS:
                csvs.append(path)
            else:
                audio.append((path.name, path))
        if csv_file is None:
            if len(csvs) != 1:
                raise BatchError(
                    "Please add a CSV file with one line per recording: file,text."
                    if not csvs
                    else "Several CSV files were uploaded; please upload exactly one."
                )
            csv_file = csvs[0]
        refs = read_references(csv_file)
        if len(audio) > MAX_BATCH_FILES:
            raise BatchError(f"{len(audio)} recordings were uploaded; the limit is {MAX_BATCH_FILES} per batch.")

        index = _Index(audio)
        used: set[int] = set()
        for i, (name, text) in enumerate(refs):
            if progress is not None:
                progress(i, len(refs), name)
            hit, why = index.find(name)
            if hit is None:
                rows.append(BatchRow(file=name, text=text, error=why))
                continue
            if hit in used:
                rows.append(BatchRow(file=name, text=text, error="This file is listed twice in the CSV."))
                continue
            used.add(hit)
            if not text:
                rows.append(BatchRow(file=name, text=text, error="No reference text for this file in the CSV."))
                continue
            try:
                rows.append(row_from_assessment(name, score(index.files[hit][1], text)))
            except Exception as exc:  # noqa: BLE001 - one bad file never fails the batch
                rows.append(BatchRow(file=name, text=text, error=_error_message(exc)))
        for j, (rel, _) in enumerate(audio):
            if j not in used:
                rows.append(BatchRow(file=rel, error="Not listed in the CSV, so it was not scored."))
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------- CSV out


def rows_table(rows: Sequence[BatchRow]) -> list[list[Any]]:
    """Rows as lists in COLUMNS order (for a Dataframe)."""
    return [list(astuple(r)) for r in rows]


def rows_to_csv(rows: Sequence[BatchRow]) -> str:
    """CSV text with a header; text cells are escaped against formula injection.

    Rows end in CRLF (RFC 4180), so a cell holding a CR or LF is quoted: a file name or text
    with a line break can never start a new row (whose first cell would escape csv_cell)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(["" if v is None else csv_cell(v) for v in astuple(r)])
    return buf.getvalue()
