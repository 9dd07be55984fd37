"""Compiled per-cell entries of a `ZoneIndex`: what one H3 cell answers without set building.

An entry is ``(interior ids, raster or None, edge ids, edge geometries)``: the shops whose zone
holds the whole cell, then the edge shops and their geometries (numpy object arrays, or None
when the cell has no edge shop).

Raster: in a dense city ~20 zone boundaries cross a res-9 cell, and an exact point-in-polygon
test costs 1-3 µs once caches are cold. So an edge cell with several edge shops is split into
G x G lng/lat squares; for each square and edge shop a status says whether the shop's zone
holds the whole square (IN), none of it (OUT) or must be tested (TEST). A query then makes a
few exact tests instead of ~20. Cells are compiled in batches so that numpy and GEOS calls
cover many cells at once (a lone cell, compiled on its first query, is a batch of one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import shapely
from h3.api import basic_int as h3
from scipy import ndimage

__all__ = ["EMPTY", "CellShops", "Entry", "G", "compile_cells", "ring_segments"]

Entry = tuple[tuple[str, ...], Any, Any, Any]
EMPTY: Entry = ((), None, None, None)
G = 8  # squares per side of a raster
OUT, IN, TEST = 0, 1, 2
_RASTER_MIN_EDGES = 4  # below this, testing every edge zone is about as cheap
# Clear squares touching at a side or a corner have overlapping grown outlines, so a zone holds
# both or neither: label them as one component, never across shops (the first axis).
_CONNECT = np.zeros((3, 3, 3), dtype=bool)
_CONNECT[1] = True


class CellShops(NamedTuple):
    """What a cell's entry is compiled from: `ids`, `geometries` and `slots` are aligned numpy
    arrays describing its edge shops (or None)."""

    cell: int
    interior: tuple[str, ...]
    ids: Any
    geometries: Any
    slots: Any


# A shop's ring segments sorted by west end, and the widest segment's width in degrees.
Segments = tuple[np.ndarray[Any, Any], float]


def ring_segments(geometry: Any) -> Segments:
    """All ring segments of a (Multi)Polygon as an (n, 4) array of ax, ay, bx, by, sorted by
    min(ax, bx), with the largest |bx - ax|."""
    rings = shapely.get_rings(shapely.get_parts(geometry))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[:-1] == ring[1:]
    seg = np.hstack((coords[:-1][same], coords[1:][same]))
    seg = seg[np.argsort(np.minimum(seg[:, 0], seg[:, 2]), kind="stable")]
    return seg, float(np.abs(seg[:, 2] - seg[:, 0]).max(initial=0.0))


def compile_cells(
    batch: list[CellShops], margin: float, segments_of: Callable[[int], Segments]
) -> list[Entry]:
    """Entries for a batch of cells; `margin` is the cover's margin in degrees and
    `segments_of(slot)` gives a shop's `ring_segments`."""
    grids = [_grid(c.cell, margin) if _wants_raster(c) else None for c in batch]
    rastered = [(c, g) for c, g in zip(batch, grids, strict=True) if g is not None]
    rasters = iter(_rasters(rastered, margin, segments_of) if rastered else [])
    entries: list[Entry] = []
    for c, g in zip(batch, grids, strict=True):
        if c.ids is None or len(c.ids) == 0:
            entries.append((c.interior, None, None, None))
        else:
            entries.append((c.interior, None if g is None else next(rasters), c.ids, c.geometries))
    return entries


def _wants_raster(c: CellShops) -> bool:
    return c.ids is not None and len(c.ids) >= _RASTER_MIN_EDGES


def _grid(cell: int, margin: float) -> tuple[float, float, float, float] | None:
    """(x0, y0, square width, square height) of the cell's bounding box grown by the margin;
    None for a cell straddling the antimeridian (it keeps testing every edge shop)."""
    latlng = np.array(h3.cell_to_boundary(cell))
    (y0, x0), (y1, x1) = (latlng.min(axis=0) - margin).tolist(), (latlng.max(axis=0) + margin).tolist()
    return None if x1 - x0 > 180.0 else (x0, y0, (x1 - x0) / G, (y1 - y0) / G)


def _rasters(
    rastered: list[tuple[CellShops, Any]], m: float, segments_of: Callable[[int], Segments]
) -> list[Any]:
    """(x0, y0, 1/width, 1/height, inside, test, tests) per cell: `inside` and `test` are
    (G*G, n) bool arrays saying, per square (i * G + j) and edge shop, that the zone holds the
    whole square or that a query must test it (OUT otherwise); `tests` counts TEST per square.

    Each square is judged grown by the margin `m`. A zone whose boundary misses the grown
    square holds all of it or none of it; only a boundary that meets it leaves it to TEST.
    Queries place a point in a square with float arithmetic, off by far less than the margin,
    so the point always lies in the grown square it is sent to; points off the grid fall back
    to testing every edge shop. Float error in the tests here can only misjudge a boundary
    that grazes a grown square's outline, which is still `m` clear of the square.
    """
    # One "row" per (cell, edge shop), each with its cell's grid.
    sizes = [len(c.ids) for c, _ in rastered]
    grid = np.repeat(np.array([g for _, g in rastered]), sizes, axis=0)  # (rows, 4)
    seg, seg_row = _segments_near_rows(np.concatenate([c.slots for c, _ in rastered]), grid, m, segments_of)
    near = _near_squares(seg, seg_row, grid, m)
    geometries = np.concatenate([c.geometries for c, _ in rastered])
    status = _settle(near, geometries, grid)
    out = []
    for start, (x0, y0, wx, wy), n in zip(
        np.cumsum([0, *sizes[:-1]]).tolist(), (g for _, g in rastered), sizes, strict=True
    ):
        rows = status[start : start + n].reshape(n, G * G).T
        test = np.ascontiguousarray(rows == TEST)
        tests = tuple(test.sum(axis=1).tolist())
        out.append((x0, y0, 1.0 / wx, 1.0 / wy, np.ascontiguousarray(rows == IN), test, tests))
    return out


def _segments_near_rows(
    slots: np.ndarray[Any, Any],
    grid: np.ndarray[Any, Any],
    m: float,
    segments_of: Callable[[int], Segments],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(segments, their rows): for each row, its shop's segments whose west end lies in the
    strip that can reach the row's grid, found by binary search on one sorted key array."""
    shops, shop_of_row = np.unique(slots, return_inverse=True)
    parts = [segments_of(int(slot)) for slot in shops]
    seg = np.concatenate([p[0] for p in parts])
    widest = np.array([p[1] for p in parts])
    # key = shop rank * 1000 + west end + 180: sorted, since each shop's segments are.
    rank = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
    keys = rank * 1000.0 + np.minimum(seg[:, 0], seg[:, 2]) + 180.0
    base = shop_of_row * 1000.0 + 180.0
    slack = m + 1e-6  # generous: the exact test comes later
    lo = np.searchsorted(keys, base + grid[:, 0] - widest[shop_of_row] - slack, side="left")
    hi = np.searchsorted(keys, base + grid[:, 0] + G * grid[:, 2] + slack, side="right")
    row, index = _expand(lo, hi - 1)
    return seg[index], row


def _near_squares(
    seg: np.ndarray[Any, Any], row: np.ndarray[Any, Any], grid: np.ndarray[Any, Any], m: float
) -> np.ndarray[Any, Any]:
    """(rows, G, G) bool: does a segment of the row's shop meet grown square (i, j)?

    Column by column: the part of the segment inside the grown column spans a range of y,
    which gives the squares it meets. Rounding can only drop a square whose grown outline
    the segment grazes, which leaves it `m` clear of the square itself.
    """
    near = np.zeros((len(grid), G, G), dtype=bool)
    x0, y0, wx, wy = grid[row].T
    ax, ay, bx, by = seg.T
    i0 = np.maximum(np.floor((np.minimum(ax, bx) - m - x0) / wx), 0).astype(np.int64)
    i1 = np.minimum(np.floor((np.maximum(ax, bx) + m - x0) / wx), G - 1).astype(np.int64)
    lo_y, hi_y = np.minimum(ay, by), np.maximum(ay, by)
    keep = np.flatnonzero((i0 <= i1) & (hi_y >= y0 - m) & (lo_y <= y0 + G * wy + m))
    # One entry per (segment, grown column it crosses).
    k, i = _expand(i0[keep], i1[keep])
    k = keep[k]
    ax, ay, dx, dy = ax[k], ay[k], bx[k] - ax[k], by[k] - ay[k]
    x0, y0, wx, wy = x0[k], y0[k], wx[k], wy[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (x0 + i * wx - m - ax) / dx
        tb = (x0 + (i + 1) * wx + m - ax) / dx
    vertical = dx == 0
    t_lo = np.where(vertical, 0.0, np.clip(np.minimum(ta, tb), 0.0, 1.0))
    t_hi = np.where(vertical, 1.0, np.clip(np.maximum(ta, tb), 0.0, 1.0))
    ya, yb = ay + t_lo * dy, ay + t_hi * dy
    j0 = np.maximum(np.floor((np.minimum(ya, yb) - m - y0) / wy), 0).astype(np.int64)
    j1 = np.minimum(np.floor((np.maximum(ya, yb) + m - y0) / wy), G - 1).astype(np.int64)
    c, j = _expand(j0, j1)
    near[row[k[c]], i[c], j] = True
    return near


def _expand(
    lo: np.ndarray[Any, Any], hi: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(index, value) for every value in lo[index]..hi[index] (empty where hi < lo)."""
    counts = np.maximum(hi - lo + 1, 0)
    index = np.repeat(np.arange(len(lo)), counts)
    return index, lo[index] + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _settle(near: np.ndarray[Any, Any], geometries: Any, grid: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """(rows, G, G) status: TEST where near, else IN or OUT, from one exact test at the centre
    of one square per connected group of clear squares."""
    labels, count = ndimage.label(~near, structure=_CONNECT)
    flat = labels.ravel()
    _, first = np.unique(flat, return_index=True)
    first = first[1:] if flat[first[0]] == 0 else first  # label 0 marks the near squares
    row, i, j = np.unravel_index(first, labels.shape)
    x0, y0, wx, wy = grid[row].T
    inside = np.zeros(count + 1, dtype=bool)
    inside[flat[first]] = shapely.intersects_xy(geometries[row], x0 + (i + 0.5) * wx, y0 + (j + 0.5) * wy)
    return np.where(near, TEST, np.where(inside[labels], IN, OUT)).astype(np.uint8)
