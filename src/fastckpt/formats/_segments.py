"""Turns a reader's candidate byte ranges into a segment map that tiles [0, size) exactly.

Readers describe what they found (possibly overlapping or running past the end when the file is
damaged); `tile` clips every range to the file, resolves overlaps in favour of the range that
starts first, and fills the holes with "other" segments, so consumers can rely on the invariant.
"""

from __future__ import annotations

from ._types import Segment


def tile(size: int, candidates: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    pos = 0
    for seg in sorted(candidates, key=lambda s: (s.offset, -s.length)):
        start = max(seg.offset, pos)
        end = min(seg.offset + seg.length, size)
        if end <= start:
            continue
        if start > pos:
            out.append(Segment(pos, start - pos, "other", None))
        out.append(Segment(start, end - start, seg.kind, seg.name))
        pos = end
    if pos < size:
        out.append(Segment(pos, size - pos, "other", None))
    return out
