"""Speculative template decoding: the greedy constrained decode, exactly, in few forwards.

A pass feeds a window of the template with *guessed* values in its slots, plus, for each slot
whose value may continue after its probe token ("1" -> "1" or "10") and whose guess does not
start with that token, the probe token as a side token (it attends to the sequence up to the
slot and to itself; nothing attends to it). One forward reads every slot of the window; the
readings are kept up to the first slot whose greedy value differs from its guess: those had
exactly the context greedy decoding gives them. The cache is cut back to just before that slot's
value and the next pass continues from there with the right value.

A fixed history (`fed`: values given before decoding for some or all slots) puts those values in
their slots instead of the greedy ones: nothing is guessed there, so one pass reads every slot
after the last greedy one. Greedy feedback lets one low reading pull the next ones down (the
model was trained on the true scores in those places, not its own); a fixed history cannot
cascade.

The first pass carries the prompt (the fixed part before the audio comes from a cache) and reads
only the first slot; `Guesser` picks later windows and guesses. A model that keeps defeating the
guesses gets small windows, so it costs about what step-by-step decoding costs. `ClipDecode` is
one clip's decode as a state machine, so that one forward can carry a pass of many clips:
`decode_clip` runs one clip, `decode_clips` many at once (each in its own cache row).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

import numpy as np
import torch

from apa.decoding.backends import DecoderBackend
from apa.decoding.plan import Plan
from apa.evidence import add_at_positions
from apa.decoding.trie import SlotReading

FAST_FIRST_WINDOW = 1  # slots the first pass (the one with the prompt) reads
PASS_COST_TOKENS = 25  # a pass costs about this many tokens' compute on top of its tokens (weights read)
GUESS_MEMORY = 200  # guesses per region the running hit rate remembers
# Per region (sentence scores, word and phone scores): (guesses that held, guesses) before any clip.
GuessPrior = list[tuple[float, float]]
INITIAL_PRIOR: GuessPrior = [(1.0, 2.0), (19.0, 20.0)]
Stats = MutableMapping[str, int]


def prompt_embeds(dec: DecoderBackend, plan: Plan, audio_emb: torch.Tensor, evidence: torch.Tensor | None = None) -> torch.Tensor:
    """A clip's prompt embeddings (prompt tokens, hidden): the chat prompt `plan.prompt_ids` with
    the audio embeddings audio_emb (n_audio_tokens, hidden) in place of its <|AUDIO|> placeholder
    and, where given, evidence (n_phones, hidden) added at the phones' entries `plan.phone_pos`
    (shifted past the audio's expansion)."""
    n_tok, a = audio_emb.shape[0], plan.audio_at
    ids = plan.prompt_ids[:a] + [plan.prompt_ids[a]] * n_tok + plan.prompt_ids[a + 1 :]
    prompt = dec.embed(torch.tensor(ids, device=audio_emb.device))
    prompt[a : a + n_tok] = audio_emb.to(prompt.dtype)
    if evidence is not None and plan.phone_pos:
        prompt = add_at_positions(prompt, evidence, [p + n_tok - 1 if p > a else p for p in plan.phone_pos])
    return prompt


class Guesser:
    """Guessed values (indices) for the slots of a speculative pass, and how many slots to take.

    Guess for slot k: for sentence scores (completeness apart: mostly 10), the previous sentence
    score (they move together); else what an earlier pass read at k (its context may have differed
    a slot or two before k: the reading still mostly holds); else the value most often chosen so
    far for that kind of slot (an odd low phone score is mostly followed by 10s again); else the
    largest value ("10", the usual score).

    Window: the number of slots w that maximises (expected slots kept) / (cost of the pass), with
    cost = PASS_COST_TOKENS + tokens fed and slot i kept when the guesses of the slots before it in
    the pass hold (the long-run cost per kept slot). P(guess holds) is estimated per region,
    sentence scores vs word and phone scores, from this clip's hits and misses on top of `prior`
    (the scorer's running counts over earlier clips).
    """

    def __init__(self, plan: Plan, prior: Sequence[tuple[float, float]] = INITIAL_PRIOR):
        self.plan = plan
        S = len(plan.slots)
        self.ctx: dict[str, int] = {}  # kind -> value index of the last chosen value
        self.counts: dict[str, dict[int, int]] = {}  # kind -> value index -> times chosen
        self.chosen: list[int | None] = [None] * S  # greedy values found so far
        self.read_val: list[int | None] = [None] * S  # reading of slot k in an earlier pass
        self.prior = [tuple(p) for p in prior]  # per region: (hits, guesses) before this clip
        self.hits = [0, 0]  # [sentence, word/phone]
        self.misses = [0, 0]

    def _kind(self, k: int) -> str:
        kind = self.plan.slots[k].kind
        if kind.startswith("sentence.") and kind != "sentence.completeness":  # (completeness: mostly 10)
            return "sentence"
        return kind

    def _region(self, k: int) -> int:
        return 0 if self.plan.slots[k].kind.startswith("sentence.") else 1

    def guesses(self, j: int, kend: int) -> list[int]:
        """Guessed value indices of slots j..kend."""
        ctx = dict(self.ctx)
        out: list[int] = []
        for k in range(j, kend + 1):
            kind = self._kind(k)
            gi = ctx.get(kind) if kind == "sentence" else None  # sentence scores: copy first
            if gi is None:
                gi = self.read_val[k]
            if gi is None:
                seen = self.counts.get(kind)
                gi = max(seen, key=seen.get) if seen else len(self.plan.slots[k].values) - 1
            out.append(gi)
            ctx[kind] = gi
        return out

    def read(self, k: int, value: int) -> None:
        """A pass read slot k as `value` (its context may have been wrong)."""
        self.read_val[k] = value

    def accept(self, k: int, value: int, guessed: int | None) -> None:
        """Slot k's greedy value is `value`; `guessed`: what the pass fed there (None: nothing)."""
        self.chosen[k] = value
        kind = self._kind(k)
        self.ctx[kind] = value
        seen = self.counts.setdefault(kind, {})
        seen[value] = seen.get(value, 0) + 1
        if guessed is not None:
            r = self._region(k)
            if guessed == value:
                self.hits[r] += 1
            else:
                self.misses[r] += 1

    def p_hit(self, k: int) -> float:
        """Estimated P(the guess at slot k holds)."""
        r = self._region(k)
        prior_hit, prior_n = self.prior[r]
        return (self.hits[r] + prior_hit) / (self.hits[r] + self.misses[r] + prior_n)

    def window(self, j: int, first_tokens: int) -> int:
        """Slots for a pass that starts at slot j, feeding first_tokens before slot j's value."""
        S = len(self.plan.slots)
        best_w, best = 1, 0.0
        kept, reach, cost = 0.0, 1.0, PASS_COST_TOKENS + first_tokens
        for w in range(1, S - j + 1):
            k = j + w - 1
            kept += reach
            if kept / cost > best:
                best, best_w = kept / cost, w
            if k + 1 < S:
                reach *= self.p_hit(k)
                cost += 2 + len(self.plan.forced[k + 1])  # value (at most 2 tokens) + forced text
            if reach < 1e-3:
                break
        return best_w


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (rows, n)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ClipDecode:
    """Speculative template decoding of one clip as a state machine (the module docstring
    explains the method).

    `plan_pass()` says what the next pass feeds: token ids (main tokens, then side probe tokens),
    their positions and attention limits, after `self.pre` (embeddings not yet in the cache, e.g.
    the prompt with its audio); `read_pass(logits)` reads the rows `self.need` of that pass and moves
    on. `self.past` is the number of this clip's tokens in the KV cache the next pass continues from.
    """

    def __init__(self, plan: Plan, prompt: torch.Tensor | None, past: int, prior: Sequence[tuple[float, float]],
                 fed: Sequence[int | None] | None = None):
        """fed: per slot, the index (into its values) of the value fed back after it (a fixed
        history), or None there for its greedy value; fed None: greedy everywhere."""
        if fed is not None and len(fed) != len(plan.slots):
            raise ValueError(f"a fixed history needs {len(plan.slots)} values, not {len(fed)}")
        self.plan = plan
        self.fed = None if fed is None else [None if v is None else int(v) for v in fed]
        self.pre = prompt  # (n, hidden) or None
        self.past = past
        self.guesser = Guesser(plan, prior)
        self.readings: list[SlotReading] = []
        self.start = list(plan.forced[0])  # tokens before slot j's value not yet fed
        self.j = 0
        self.window = len(plan.slots) if self._fixed_from(0) else FAST_FIRST_WINDOW
        self.need: list[int] = []  # rows of the last pass whose logits read_pass wants, ascending
        self._pass: tuple = ()

    def _fixed(self, k: int) -> bool:
        return self.fed is not None and self.fed[k] is not None

    def _fixed_from(self, j: int) -> bool:
        """Every slot from j on has a fixed value (one pass reads them all)."""
        return self.fed is not None and all(v is not None for v in self.fed[j:])

    @property
    def done(self) -> bool:
        return self.j >= len(self.plan.slots)

    @property
    def n_pre(self) -> int:
        return 0 if self.pre is None else self.pre.shape[0]

    def plan_pass(self) -> tuple[list[int], list[int], list[int], int]:
        """(ids, positions, limits, n_main) of the next pass. Its rows are the n_pre embeddings of
        self.pre, then the ids; positions and limits cover all rows: row r attends to the cache
        entries < limits[r] and to itself (main rows: everything before them; side rows: the
        sequence up to their slot). n_main counts the main rows (self.pre included)."""
        plan = self.plan
        j = self.j
        kend = min(len(plan.slots) - 1, j + self.window - 1)
        g = self.guesser.guesses(j, kend)
        if self.fed is not None:
            g = [g[i] if self.fed[k] is None else self.fed[k] for i, k in enumerate(range(j, kend + 1))]
        n_pre, past = self.n_pre, self.past
        main = list(self.start)
        read_at: list[int] = []  # row of the token before each slot's value (its reading)
        for i, k in enumerate(range(j, kend + 1)):
            read_at.append(n_pre + len(main) - 1)
            if k < kend:
                main += plan.value_toks[k][g[i]]
                main += plan.forced[k + 1]
        n_main = n_pre + len(main)
        side: list[int] = []  # probe tokens read off the sequence
        side_lim: list[int] = []  # each attends to the first side_lim cache positions (+ itself)
        probe_rows: list[dict[int, int]] = []  # per slot: probe token -> row of its reading
        for i, k in enumerate(range(j, kend + 1)):
            rows: dict[int, int] = {}
            v = read_at[i] + 1  # row of the slot's first value token
            for t in plan.tries[k].probe_tokens:
                if k < kend and plan.value_toks[k][g[i]][0] == t:
                    rows[t] = v  # the guessed value starts with the probe token: read it there
                else:
                    rows[t] = n_main + len(side)
                    side.append(t)
                    side_lim.append(past + v)
            probe_rows.append(rows)
        self.need = sorted(set(read_at) | {r for rows in probe_rows for r in rows.values()})
        self._pass = (kend, g, read_at, probe_rows, n_main)
        pos = list(range(past, past + n_main)) + side_lim
        lim = list(range(past + 1, past + n_main + 1)) + side_lim
        return main + side, pos, lim, n_main

    def _slot_probs(self, logits: np.ndarray) -> list[np.ndarray]:
        """P(value) of every slot of the last pass, slots with the same values (trie) at once."""
        plan = self.plan
        kend, _, read_at, probe_rows, _ = self._pass
        j = self.j
        row_of = {r: i for i, r in enumerate(self.need)}
        n = kend - j + 1
        slot_probs: list[np.ndarray] = [None] * n  # type: ignore[list-item]
        groups: dict[int, list[int]] = {}
        for i in range(n):
            groups.setdefault(id(plan.tries[j + i]), []).append(i)
        for idx in groups.values():
            first_cols, probes, singles = plan.specs[j + idx[0]]  # the same first tokens in a group
            p_first = _softmax_rows(logits[np.ix_([row_of[read_at[i]] for i in idx], first_cols)])
            probs = np.zeros((len(idx), len(plan.slots[j + idx[0]].values)))
            for vi, fpos in singles:
                probs[:, vi] = p_first[:, fpos]
            for q, (fpos, t, branch) in enumerate(probes):
                rows = np.array([row_of[probe_rows[i][t]] for i in idx])[:, None]
                cols = np.array([[c for _, c in plan.specs[j + i][1][q][2]] for i in idx])  # the end token varies
                p_next = _softmax_rows(logits[rows, cols])
                for b, (vi, _) in enumerate(branch):
                    probs[:, vi] = p_first[:, fpos] * p_next[:, b]
            probs /= probs.sum(axis=1, keepdims=True)
            for a, i in enumerate(idx):
                slot_probs[i] = probs[a]
        return slot_probs

    def read_pass(self, logits: np.ndarray) -> None:
        """logits: (len(self.need), len(plan.cols)) float64, the LM head at the rows self.need."""
        plan, guesser = self.plan, self.guesser
        kend, g, read_at, _, n_main = self._pass
        j = self.j
        stop, chosen = kend, 0
        for i, probs in enumerate(self._slot_probs(logits)):
            k = j + i
            c = int(np.argmax(probs))
            guesser.read(k, c)
            if stop < k:
                continue
            self.readings.append(SlotReading(plan.slots[k].kind, plan.slots[k].values, probs))
            if self._fixed(k):
                chosen = self.fed[k]
                continue
            chosen = c
            guesser.accept(k, chosen, g[i] if k < kend else None)
            if k < kend and chosen != g[i]:
                stop = k  # later slots of this pass saw a wrong value
        # keep the cache up to the stop slot's value; continue with its chosen value
        self.past += read_at[stop - j] + 1 if stop < kend else n_main
        self.pre = None
        self.start = list(plan.value_toks[stop][chosen]) + plan.forced[stop + 1]
        self.j = stop + 1
        if self.j < len(plan.slots):
            self.window = len(plan.slots) - self.j if self._fixed_from(self.j) else guesser.window(self.j, len(self.start))

    def update_prior(self, prior: Sequence[tuple[float, float]]) -> GuessPrior:
        """The running guess-hit counts over clips, with this clip's added (decayed: the last
        ~GUESS_MEMORY guesses per region; slots of a fixed history guess nothing)."""
        out = []
        for r, (h, n) in enumerate(prior):
            h, n = h + self.guesser.hits[r], n + self.guesser.hits[r] + self.guesser.misses[r]
            if n > GUESS_MEMORY:
                h, n = h * GUESS_MEMORY / n, GUESS_MEMORY
            out.append((h, n))
        return out


def decode_clip(
    dec: DecoderBackend, plan: Plan, prompt: torch.Tensor, prior: Sequence[tuple[float, float]], stats: Stats,
    fed: Sequence[int | None] | None = None,
) -> tuple[list[SlotReading], GuessPrior]:
    """One clip: prompt (prompt tokens, hidden) from `prompt_embeds`. Returns the readings of every
    slot in template order and the guess prior updated with this clip; adds to `stats` (forwards,
    passes, llm_tokens, side_tokens, slots). fed: a fixed history (`ClipDecode`), None: greedy."""
    dev = prompt.device
    w_head, b_head = dec.head_rows(plan.cols)
    cache = dec.new_cache(prompt.shape[0] + plan.max_decode_tokens)
    n = dec.load_prefix(cache, plan.prompt_ids[: plan.audio_at])
    clip = ClipDecode(plan, prompt[n:], n, prior, fed)
    while not clip.done:
        n_pre, pre = clip.n_pre, clip.pre
        ids, pos, lim, n_main = clip.plan_pass()
        x = dec.embed(torch.tensor(ids, device=dev))
        if pre is not None:
            x = torch.cat((pre, x.to(pre.dtype)))
        hidden = dec.forward(cache, clip.past, x, torch.tensor(pos, device=dev), n_main, lim[n_main:])
        # the LM head on the rows and vocabulary columns that are read, nothing else
        logits = torch.nn.functional.linear(hidden[clip.need].float(), w_head, b_head)
        clip.read_pass(logits.float().cpu().numpy().astype(np.float64))
        stats["forwards"] += 1
        stats["passes"] += 1
        stats["llm_tokens"] += n_pre + len(ids)
        stats["side_tokens"] += len(ids) + n_pre - n_main
    stats["slots"] += len(clip.readings)
    return clip.readings, clip.update_prior(prior)


def decode_clips(
    dec: DecoderBackend, plans: Sequence[Plan], prompts: Sequence[torch.Tensor],
    prior: Sequence[tuple[float, float]], stats: Stats, fed: Sequence[Sequence[int | None] | None] | None = None,
) -> tuple[list[list[SlotReading]], GuessPrior]:
    """`decode_clip` for many clips (fed: per clip, as there; a `batched` backend): each forward carries the next pass of
    every unfinished clip, right-padded to the longest (padding rows attend to entry 0 only and
    write their K/V to a spare cache column nobody reads). A clip's cache row holds exactly what
    its own decode would hold, at its own offsets, so readings are the same. Also counts
    padded_tokens and compactions in `stats`."""
    dev = prompts[0].device
    B = len(plans)
    stats["padded_tokens"] = stats["compactions"] = 0
    # one cache row per clip, + 1 spare column for padding writes
    max_len = max(p.shape[0] + plan.max_decode_tokens for plan, p in zip(plans, prompts)) + 1
    cache = dec.new_cache(max_len, batch=B)
    spare = max_len - 1
    clips: list[ClipDecode] = []
    for b, (plan, prompt) in enumerate(zip(plans, prompts)):
        n = dec.load_prefix(cache, plan.prompt_ids[: plan.audio_at], row=b)
        clips.append(ClipDecode(plan, prompt[n:], n, prior, None if fed is None else fed[b]))
    # vocabulary columns read by any clip; per clip, where its plan's columns are among them
    union = sorted({c for plan in plans for c in plan.cols})
    at = {c: i for i, c in enumerate(union)}
    sel = [np.array([at[c] for c in plan.cols]) for plan in plans]
    w_head, b_head = dec.head_rows(union)
    row_of = list(range(B))  # cache row of each clip (rows are compacted as clips finish)
    active = list(range(B))
    while active:
        x, pos, lim, write, R, T = _batch_pass(dec, clips, active, row_of, spare, prompts[0], stats)
        n_keys = int(write.max(where=write != spare, initial=0)) + 1
        hidden = dec.forward_batch(cache, x, torch.from_numpy(pos).to(dev), torch.from_numpy(lim).to(dev),
                                   torch.from_numpy(write).to(dev), n_keys)  # (R, T, hidden)
        need_r = np.concatenate([np.full(len(clips[b].need), row_of[b]) for b in active])
        need_t = np.concatenate([np.asarray(clips[b].need) for b in active])
        h = hidden[torch.from_numpy(need_r).to(dev), torch.from_numpy(need_t).to(dev)]
        logits = torch.nn.functional.linear(h.float(), w_head, b_head).cpu().numpy().astype(np.float64)
        i = 0
        for b in active:
            n = len(clips[b].need)
            clips[b].read_pass(logits[i : i + n][:, sel[b]])
            i += n
        stats["forwards"] += 1
        stats["passes"] += len(active)
        stats["padded_tokens"] += R * T
        active = [b for b in active if not clips[b].done]
        if active and len(active) <= R * 3 // 4:
            _compact(cache, active, row_of)
            stats["compactions"] += 1
    for c in clips:
        stats["slots"] += len(c.readings)
        prior = c.update_prior(prior)
    return [c.readings for c in clips], list(prior)


def _batch_pass(
    dec: DecoderBackend, clips: Sequence[ClipDecode], active: Sequence[int], row_of: Sequence[int], spare: int,
    like: torch.Tensor, stats: Stats,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The inputs of one batched forward: (x (R, T, hidden) embeddings like `like`, then positions,
    attention limits and cache write columns, each (R, T) int64; R rows, T tokens). Rows 0..R-1
    of the cache take part; those of finished clips carry padding only."""
    dev = like.device
    R = max(row_of[b] for b in active) + 1
    passes = {}
    for b in active:
        c = clips[b]
        pre, n_pre, past = c.pre, c.n_pre, c.past
        passes[row_of[b]] = (pre, n_pre, past, *c.plan_pass())
    T = max(n_pre + len(ids) for _, n_pre, _, ids, *_ in passes.values())
    pos = np.zeros((R, T), dtype=np.int64)
    lim = np.ones((R, T), dtype=np.int64)  # padding rows attend to entry 0 only ...
    write = np.full((R, T), spare, dtype=np.int64)  # ... and write to the spare column
    x = torch.zeros((R, T, like.shape[-1]), dtype=like.dtype, device=dev)
    flat_ids, id_r, id_t = [], [], []  # the fed ids, and the (row, pass position) of each
    for r, (pre, n_pre, past, ids, p, l, n_main) in passes.items():
        n = len(p)
        pos[r, :n] = p
        lim[r, :n] = l
        write[r, :n] = np.arange(past, past + n)
        if pre is not None:
            x[r, :n_pre] = pre
        flat_ids.append(np.asarray(ids, dtype=np.int64))
        id_r.append(np.full(len(ids), r))
        id_t.append(np.arange(n_pre, n))
        stats["llm_tokens"] += n
        stats["side_tokens"] += n - n_main
    ids_all = torch.from_numpy(np.concatenate(flat_ids)).to(dev)
    if ids_all.numel():
        at_r, at_t = (torch.from_numpy(np.concatenate(v)).to(dev) for v in (id_r, id_t))
        x[at_r, at_t] = dec.embed(ids_all).to(x.dtype)
    return x, pos, lim, write, R, T


def _compact(cache: Sequence[torch.Tensor], active: Sequence[int], row_of: list[int]) -> None:
    """Move the unfinished clips' cache rows to the front (one layer at a time: no full copy) and
    renumber row_of."""
    keep = torch.tensor([row_of[b] for b in active], device=cache[0].device)
    for K in cache:
        for layer in range(K.shape[0]):
            K[layer, : len(active)] = K[layer, keep]
    for i, b in enumerate(active):
        row_of[b] = i
