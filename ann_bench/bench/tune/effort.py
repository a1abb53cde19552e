"""The search-effort bisection (pure: unit-tested without an index). On a built index, recall rises with the
backend's effort parameter (``ef``, ``nprobe``, ``search_k``; ``eps`` falls): :func:`bisect_targets` finds, for each
recall target, the least effort reaching it — an exponential probe from the cheapest setting, then a search of the
bracket to the exact integer (up to 64; within 1/64 above). Targets share their measurements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ann_bench.backends import Index
from ann_bench.bench.metrics import SATURATION

PRUNE_MARGIN = 0.8  # a target is given up for a build only when a probe is below 80 % of the best speed so far


# ---- the effort ladder and the bisection (pure: unit-tested without an index) ----------------------------------
@dataclass(frozen=True)
class Ladder:
    """The values of an effort parameter in increasing effort: every integer in [lo, hi] (``values`` empty), or
    an explicit list (floats: e.g. eps from large to 0)."""

    lo: int = 0
    hi: int = 0
    values: tuple = ()

    def __len__(self) -> int:
        return len(self.values) if self.values else self.hi - self.lo + 1

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.values[i] if self.values else self.lo + i

    def position(self, i: int) -> float:
        """Where setting i lies on the effort scale the search steps along: log of the value for an integer
        ladder (effort doubles per unit), the index for an explicit list."""
        return math.log(self.lo + i) if not self.values and self.lo + i > 0 else float(i)

    def close(self, fail: int, succ: int) -> bool:
        """Whether the bracket (fail, succ) is narrow enough to stop: adjacent settings, or for an integer ladder
        values within 1/64 of each other (exact up to 64: ef, nprobe; 1.6 % for search_k in the thousands,
        where one more probe per halving buys nothing measurable)."""
        if succ - fail <= 1:
            return True
        return not self.values and (self.lo + succ) - (self.lo + fail) <= (self.lo + succ) // 64

    def nearest(self, position: float) -> int:
        """The setting nearest a position of :meth:`position`'s scale."""
        if self.values or self.lo + 0 <= 0:
            return min(len(self) - 1, max(0, round(position)))
        return min(len(self) - 1, max(0, round(math.exp(min(position, 700.0))) - self.lo))

    def doubled(self, i: int) -> int:
        """The setting with about twice the effort of setting i (at least i + 1, at most the last)."""
        nxt = (2 * (self.lo + i) - self.lo) if not self.values and self.lo + i > 0 else 2 * i + 1
        return min(len(self) - 1, max(i + 1, nxt))


def _logit(r: float) -> float:
    r = min(max(r, 1e-4), 1 - 1e-4)
    return math.log(r / (1 - r))


def saturated(before: float, after: float) -> bool:
    """Whether doubling the effort moved the recall (``before`` -> ``after``, both below the target) by less than
    SATURATION: twice in a row, the recall has levelled off below the target (e.g. IVF-PQ capped by its
    re-ranking depth, whatever nprobe), and doubling on would only measure slower settings."""
    return math.isfinite(before) and after - before < SATURATION


def bisect_targets(ladder: Ladder, probe, targets: list[float], bars: list[float | None] | None = None
                   ) -> dict[float, int | None]:
    """For each target (ascending), the least index i of ``ladder`` (increasing effort; recall assumed monotone)
    whose ``probe(i)`` recall reaches it, or None when the last setting does not (or the target was pruned).

    ``probe(i)`` -> (recall, speed), or None where the setting cannot be measured (counts as not reaching).
    Probes are memoised and shared by the targets. The search doubles the effort from the cheapest setting
    (or from the previous target's answer) until a setting reaches the target (or the recall levels off below
    it: :func:`saturated`), then narrows the bracket to
    adjacent settings (:meth:`Ladder.close`: exact integers up to 64, then within 1/64 of the value): by
    interpolating logit(recall) against log(effort) where that halves the bracket, else by bisection.
    ``bars[j]``: the best speed already known for target j; a probe below target j that is also slower than
    ``PRUNE_MARGIN`` of it prunes target j (more effort is only slower; the margin allows for timing noise)."""
    n = len(ladder)
    seen: dict[int, tuple[float, float] | None] = {}

    def recall(i: int) -> float:
        if i not in seen:
            seen[i] = probe(i)
        got = seen[i]
        return -math.inf if got is None else got[0]

    out: dict[float, int | None] = {}
    start = 0
    for j, target in sorted(enumerate(targets), key=lambda jt: jt[1]):
        bar = bars[j] if bars is not None else None

        def hopeless(i: int) -> bool:
            got = seen.get(i)
            return bar is not None and got is not None and got[0] < target and got[1] < bar * PRUNE_MARGIN

        if any(hopeless(i) for i in seen if i >= start):
            out[target] = None
            continue
        succ = min((i for i in seen if i >= start and recall(i) >= target), default=None)
        fail = max((i for i in seen if start <= i < (succ if succ is not None else n) and recall(i) < target),
                   default=None)
        flat = 0  # consecutive doublings that left the recall where it was
        while succ is None:  # double the effort until the target is reached
            i = start if fail is None else ladder.doubled(fail)
            if recall(i) >= target:
                succ = i
                break
            flat = flat + 1 if fail is not None and saturated(recall(fail), recall(i)) else 0
            if hopeless(i) or i == n - 1 or flat >= 2:
                break
            fail = i
        if succ is None or hopeless(succ):
            out[target] = None
            continue
        pruned, halved = False, True
        while fail is not None and not ladder.close(fail, succ):
            mid = (fail + succ) // 2
            rf, rs = recall(fail), recall(succ)
            if halved and math.isfinite(rf) and rs > rf:  # interpolate where the curve is known on both sides
                pf, ps = ladder.position(fail), ladder.position(succ)
                want = pf + (ps - pf) * (_logit(target) - _logit(rf)) / (_logit(rs) - _logit(rf))
                mid = min(succ - 1, max(fail + 1, ladder.nearest(want)))
            width = succ - fail
            if recall(mid) >= target:
                succ = mid
            else:
                fail = mid
                if hopeless(mid):
                    pruned = True
                    break
            halved = (succ - fail) * 2 <= width
        out[target] = None if pruned else succ
        if not pruned:
            start = succ  # a higher target needs at least this effort
    return out


# ---- what tune explores per backend ----------------------------------------------------------------------------
def effort_ladder(cls: type[Index], build: dict[str, Any], n: int, k: int) -> tuple[str, Ladder] | None:
    """The effort parameter bisected for an index of ``cls`` with ``build``, and its ladder; None for a backend
    without one (flat)."""
    if not cls.effort_params:
        return None
    name = next(iter(cls.effort_params))
    if name == "ef":
        return name, Ladder(k, max(k, min(n, 4096)))
    if name == "nprobe":
        return name, Ladder(1, max(1, int(build.get("nlist", 1))))
    if name == "search_k":
        lo = max(k, int(build.get("n_trees", 1)) * k // 2)
        return name, Ladder(lo, max(lo, 2 * n))
    if name == "eps":  # k-d tree: from a loose bound down to exact
        return name, Ladder(values=(16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0))
    param = next(p for p in cls.search_params if p.name == name)
    lo, hi = int(param.min or 1), int(min(param.max or 1024, 1 << 16))
    return name, Ladder(lo, hi) if cls.effort_params[name] > 0 else None


