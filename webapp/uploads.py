"""Everything that reaches into Gradio's internals about uploaded files, in one place.

Gradio keeps every upload in its cache until a periodic sweep. A scoring request deletes the
files it used when it ends (`claim_uploads` at the start, `release_uploads` at the end), so a
learner's recording does not outlive the request that scored it. Uploads are content-addressed
(identical bytes share one path), which is why another request's files are left alone.
These helpers read Gradio's LocalContext (the running Blocks, event id, request) and the
queue's event table: if Gradio renames them, this module is the only one to change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _local_context():
    from gradio.context import LocalContext

    return LocalContext


def upload_dirs() -> list[Path]:
    """Folders where Gradio stores uploads (the running server's, and the configured one)."""
    from gradio.utils import get_upload_folder

    dirs = [get_upload_folder()]
    blocks = _local_context().blocks.get(None)
    server = getattr(blocks, "server_app", None)
    if getattr(server, "uploaded_file_dir", None):
        dirs.append(server.uploaded_file_dir)
    return list(dict.fromkeys(Path(d).resolve() for d in dirs))


def request_session() -> str | None:
    """The browser session of the current Gradio request (None outside a request)."""
    req = _local_context().request.get(None)
    return getattr(req, "session_hash", None)


def _mentions(value: Any, target: str) -> bool:
    if isinstance(value, str):
        return value == target
    if isinstance(value, dict):
        return any(_mentions(v, target) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, target) for v in value)
    return False


def _used_by_other_requests(path: str) -> bool:
    """Whether a queued or running event other than the current one carries this file."""
    ctx = _local_context()
    blocks = ctx.blocks.get(None)
    events = getattr(getattr(blocks, "_queue", None), "event_ids_to_events", None)
    if not events:
        return False
    me = ctx.event_id.get(None)
    for _ in range(3):  # the dict is changed by the event loop's thread
        try:
            others = [e for eid, e in list(events.items()) if eid != me]
            break
        except RuntimeError:
            continue
    else:
        return True  # cannot tell: keep it (the cache sweep removes it later)
    for e in others:
        data = getattr(getattr(e, "data", None), "data", None)
        if data is not None and _mentions(data, path):
            return True
    return False


def _forget_upload(path: str) -> None:
    """Drop a deleted upload from Gradio's record of uploads (a set that otherwise only grows)."""
    files = getattr(_local_context().blocks.get(None), "upload_file_set", None)
    if isinstance(files, set):
        files.discard(path)


def claim_uploads(paths: list[Any]) -> list[tuple[str, int]]:
    """Note the uploads a request uses (path, inode) at its start, for `release_uploads`."""
    claims = []
    for p in paths:
        if not isinstance(p, (str, Path)):
            continue
        try:
            claims.append((str(p), os.stat(p).st_ino))
        except OSError:
            continue
    return claims


def release_uploads(claims: list[tuple[str, int]]) -> int:
    """Delete, at the end of a request, the uploaded files it used: only files inside Gradio's
    upload folder, not re-uploaded since the request started (same inode), and not carried by
    another queued or running request. Empty upload folders go too. Returns how many were deleted."""
    if not claims:
        return 0
    roots = upload_dirs()
    deleted = 0
    for path, ino in claims:
        p = Path(path)
        try:
            real = p.resolve()
            if not any(real.is_relative_to(r) and real != r for r in roots):
                continue  # not an upload (e.g. a file passed by a test or a local caller)
            if os.stat(real).st_ino != ino or _used_by_other_requests(path):
                continue
            real.unlink()
            deleted += 1
            _forget_upload(path)
            try:
                real.parent.rmdir()  # <upload dir>/<sha256>/ when empty
            except OSError:
                pass
        except OSError:
            continue
    return deleted


# ------------------------------------------------------------------ files we hand to Gradio

SCRATCH_MAX_AGE_S = 3600  # downloads and TTS clips we write are removed after this


def _scratch_dir() -> Path:
    import tempfile

    d = Path(tempfile.gettempdir()) / "apa-app"
    d.mkdir(exist_ok=True)
    return d


def scratch_file(name: str) -> Path:
    """A fresh path `<tmp>/apa-app/<uuid>/<name>` (Gradio copies it to its cache when returned).
    Folders older than SCRATCH_MAX_AGE_S are removed on each call."""
    import shutil
    import time
    import uuid

    root = _scratch_dir()
    now = time.time()
    for d in root.iterdir():
        try:
            if now - d.stat().st_mtime > SCRATCH_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
    d = root / uuid.uuid4().hex
    d.mkdir()
    return d / name
