"""Per-browser-session memory of the last decoded recording, for "Score this recording again".

The upload itself is deleted when its request ends (webapp.uploads), so the decoded 16 kHz audio
is kept here, in this process's memory only, never on disk: at most RECENT_TTL_S per session and
for the RECENT_MAX most recent sessions. There is no unload hook on purpose: it would hold a
heartbeat connection open in every learner's page.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np

RECENT_TTL_S = 600.0  # a session's last decoded recording is kept this long ...
RECENT_MAX = 32  # ... for at most this many sessions (each <= 30 s * 16 kHz * 4 B = 1.9 MB)

_recent: OrderedDict[str, tuple[float, str, np.ndarray]] = OrderedDict()
_lock = threading.Lock()


def recent_get(session: str | None, path: str | None) -> np.ndarray | None:
    """The decoded audio this session last uploaded at `path`, if still kept."""
    if session is None or path is None:
        return None
    with _lock:
        now = time.monotonic()
        for k in [k for k, (t, _, _) in _recent.items() if now - t > RECENT_TTL_S]:
            del _recent[k]
        hit = _recent.get(session)
    return hit[2] if hit is not None and hit[1] == str(path) else None


def recent_put(session: str | None, path: str | None, audio: np.ndarray) -> None:
    """Keep this session's decoded recording (replacing its previous one; oldest session dropped)."""
    if session is None or path is None:
        return
    with _lock:
        _recent[session] = (time.monotonic(), str(path), audio)
        _recent.move_to_end(session)
        while len(_recent) > RECENT_MAX:
            _recent.popitem(last=False)


def recent_count() -> int:
    """How many sessions have a recording kept."""
    with _lock:
        return len(_recent)


def recent_clear() -> None:
    """Forget every kept recording."""
    with _lock:
        _recent.clear()
