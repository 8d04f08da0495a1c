"""Reader for pocketsphinx's binary model definition (`mdef`): which context-independent phone
every senone belongs to (apa.align sums senone scores per phone), and the senones of each
triphone in its context. No pocketsphinx import."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def parse_mdef(path: Path) -> tuple[list[str], int, np.ndarray, np.ndarray, np.ndarray]:
    """Binary sphinx model definition -> (CI phone names, number of senones, phones' (ssid, tmat,
    info) records, (n_sseq, n_emit) senone sequences, base CI phone of every phone).

    Layout (pocketsphinx bin_mdef.c, format version 1): int32 magic 'BMDF', version, header length,
    header text; int32 n_ciphone, n_phone, n_emit_state, n_ci_sen, n_sen, n_tmat, n_sseq, n_ctx,
    n_cd_tree, sil; NUL-terminated CI names padded to 4 bytes; cd_tree (8 bytes a node); phones
    (int32 ssid, int32 tmat, uint8 info[4]; a CD phone's base is info[1]); int32 n; uint16 sseq[n]."""
    buf = path.read_bytes()
    magic, version, hdr_len = np.frombuffer(buf, "<i4", 3)
    if magic != 0x46444D42 or version > 1:
        raise RuntimeError(f"{path}: not a little-endian binary mdef (version 1)")
    pos = 12 + hdr_len
    (n_ci, n_phone, n_emit, _n_ci_sen, n_sen, _n_tmat, n_sseq, _n_ctx, n_tree, _sil) = np.frombuffer(
        buf, "<i4", 10, pos
    ).tolist()
    pos += 40
    names_start = pos
    names = []
    for _ in range(n_ci):
        end = buf.index(b"\0", pos)
        names.append(buf[pos:end].decode("ascii"))
        pos = end + 1
    pos = names_start + ((pos - names_start + 3) & ~3)
    pos += 8 * n_tree
    phones = np.frombuffer(buf, np.dtype([("ssid", "<i4"), ("tmat", "<i4"), ("info", "u1", 4)]), n_phone, pos)
    pos += 12 * n_phone
    (sseq_size,) = np.frombuffer(buf, "<i4", 1, pos)
    sseq = np.frombuffer(buf, "<u2", sseq_size, pos + 4)
    if not n_emit or sseq_size != n_sseq * n_emit:
        raise RuntimeError(f"{path}: heterogeneous topologies are not supported")
    base = np.where(np.arange(n_phone) < n_ci, np.arange(n_phone), phones["info"][:, 1])
    return names, n_sen, phones, sseq.reshape(n_sseq, n_emit), base


def read_mdef(path: Path) -> tuple[list[str], np.ndarray]:
    """Binary sphinx model definition -> (CI phone names, base CI phone of every senone)."""
    names, n_sen, phones, sseq, base = parse_mdef(path)
    sen2ci = np.full(n_sen, -1, np.int64)
    # first writer wins, as in pocketsphinx (senones are not shared between base phones here)
    for pid in range(len(phones) - 1, -1, -1):
        sen2ci[sseq[phones["ssid"][pid]]] = base[pid]
    return names, sen2ci


def read_mdef_states(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Binary sphinx model definition -> (CI phone names, base CI phone of every phone (CI and
    context-dependent), (n_phone, n_emit) senone of each emitting state of every phone)."""
    names, _n_sen, phones, sseq, base = parse_mdef(path)
    return names, base, sseq[phones["ssid"]].astype(np.int64)


# Word positions of a context-dependent phone, as pocketsphinx numbers them (mdef.h word_posn_t).
WORD_INTERNAL, WORD_BEGIN, WORD_END, WORD_SINGLE = 0, 1, 2, 3


def read_mdef_triphones(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Binary sphinx model definition -> (CI phone names, (n_ci, n_ci, n_ci, 4) table, (n_phone,
    n_emit) senones of every phone). table[base, left, right, word position] is the phone id of
    that triphone, -1 where the model has none; CI phone ids are the CI indices themselves (their
    own senones). A CD phone's info bytes are (word position, base, left, right)."""
    names, _n_sen, phones, sseq, _base = parse_mdef(path)
    n_ci = len(names)
    info = phones["info"][n_ci:].astype(np.int64)
    table = np.full((n_ci, n_ci, n_ci, 4), -1, np.int64)
    table[info[:, 1], info[:, 2], info[:, 3], info[:, 0]] = np.arange(n_ci, len(phones))
    return names, table, sseq[phones["ssid"]].astype(np.int64)
