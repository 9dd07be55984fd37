"""Compiled per-cell entries of a `ZoneIndex`: what one H3 cell answers without set building.

An entry is ``(interior ids, raster or None, edge ids, edge geometries)``: the shops whose zone
holds the whole cell, then the edge shops and their prepared geometries (numpy object arrays,
or None when the cell has no edge shop).

Raster: in a dense city ~20 zone boundaries cross a res-9 cell, and a prepared point-in-polygon
test costs 1-3 µs once caches are cold. So an edge cell with several edge shops is split into
G x G lng/lat squares; for each square and edge shop a status says whether the shop's zone
holds the whole square (IN), none of it (OUT) or must be tested (TEST). A query then makes a
few exact tests instead of ~20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from h3.api import basic_int as h3

__all__ = ["EMPTY", "IN", "TEST", "Entry", "G", "compile_cell", "ring_segments"]

Entry = tuple[tuple[str, ...], Any, Any, Any]
EMPTY: Entry = ((), None, None, None)
G = 8  # squares per side of a raster
OUT, IN, TEST = 0, 1, 2
_RASTER_MIN_EDGES = 4  # below this, testing every edge zone is about as cheap


def ring_segments(geometry: Any) -> np.ndarray[Any, Any]:
    """All ring segments of a (Multi)Polygon as an (n, 4) array of ax, ay, bx, by."""
    rings = shapely.get_rings(shapely.get_parts(geometry))
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[:-1] == ring[1:]
    return np.hstack((coords[:-1][same], coords[1:][same]))


def compile_cell(
    cell: int,
    margin: float,
    interior: tuple[str, ...],
    ids: Any,
    geometries: Any,
    segments: list[np.ndarray[Any, Any]] | None,
) -> Entry:
    """Entry for `cell`; `ids` and `geometries` (aligned numpy object arrays, or None) are its
    edge shops, `segments` their `ring_segments`, `margin` the cover's margin in degrees."""
    if ids is None or len(ids) == 0:
        return (interior, None, None, None)
    raster = None
    if segments is not None and len(ids) >= _RASTER_MIN_EDGES:
        raster = _raster(cell, margin, geometries, segments)
    return (interior, raster, ids, geometries)


def _raster(cell: int, margin: float, geometries: Any, segments: list[np.ndarray[Any, Any]]) -> Any:
    """(x0, y0, 1/width, 1/height, inside, test) for the cell's G x G squares: `inside` and
    `test` are (G*G, n) bool arrays saying, per square (i * G + j) and edge shop, that the zone
    holds the whole square, or that the query must test it (OUT otherwise); None for a cell
    straddling the antimeridian.

    Each square is judged grown by `margin`. A zone whose boundary misses the grown square
    holds all of it or none of it; only a boundary that meets it leaves the square to TEST.
    Queries place a point in a square with float arithmetic, off by far less than the margin,
    so the point always lies in the grown square it is sent to; points off the grid fall back
    to testing every edge shop. Float error in the tests here can only misjudge a boundary
    that grazes a grown square's outline, which is still `margin` clear of the square.
    """
    latlng = np.array(h3.cell_to_boundary(cell))
    (y0, x0), (y1, x1) = (latlng.min(axis=0) - margin).tolist(), (latlng.max(axis=0) + margin).tolist()
    if x1 - x0 > 180.0:
        return None
    n = len(segments)
    wx, wy = (x1 - x0) / G, (y1 - y0) / G
    near = _near_squares(
        np.concatenate(segments),
        np.repeat(np.arange(n), [len(s) for s in segments]),
        n,
        x0,
        y0,
        wx,
        wy,
        margin,
    )
    status = _settle(near, geometries, x0, y0, wx, wy)
    return (x0, y0, 1.0 / wx, 1.0 / wy, status == IN, status == TEST)


def _near_squares(
    seg: np.ndarray[Any, Any],
    owner: np.ndarray[Any, Any],
    n: int,
    x0: float,
    y0: float,
    wx: float,
    wy: float,
    m: float,
) -> np.ndarray[Any, Any]:
    """(n, G, G) bool: does any segment of shop s meet grown square (i, j)?"""
    near = np.zeros((n, G, G), dtype=bool)
    ax, ay, bx, by = seg.T
    lox, hix = np.minimum(ax, bx), np.maximum(ax, bx)
    loy, hiy = np.minimum(ay, by), np.maximum(ay, by)
    keep = (hix >= x0 - m) & (lox <= x0 + G * wx + m) & (hiy >= y0 - m) & (loy <= y0 + G * wy + m)
    if not keep.any():
        return near
    ax, ay, bx, by, owner = ax[keep], ay[keep], bx[keep], by[keep], owner[keep]
    # Squares whose grown outline overlaps the segment's bounding box, one extra on each side
    # so that rounding in the index arithmetic cannot drop one.
    i0 = np.maximum(np.floor((lox[keep] - m - x0) / wx).astype(np.int64) - 1, 0)
    i1 = np.minimum(np.floor((hix[keep] + m - x0) / wx).astype(np.int64) + 1, G - 1)
    j0 = np.maximum(np.floor((loy[keep] - m - y0) / wy).astype(np.int64) - 1, 0)
    j1 = np.minimum(np.floor((hiy[keep] + m - y0) / wy).astype(np.int64) + 1, G - 1)
    # One row per (segment, candidate square).
    w = j1 - j0 + 1
    counts = (i1 - i0 + 1) * w
    rep = np.repeat(np.arange(len(counts)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    i = i0[rep] + offset // w[rep]
    j = j0[rep] + offset % w[rep]
    ax, ay, bx, by = ax[rep], ay[rep], bx[rep], by[rep]
    lx, hx = x0 + i * wx - m, x0 + (i + 1) * wx + m
    ly, hy = y0 + j * wy - m, y0 + (j + 1) * wy + m
    hit = (np.minimum(ax, bx) <= hx) & (np.maximum(ax, bx) >= lx)
    hit &= (np.minimum(ay, by) <= hy) & (np.maximum(ay, by) >= ly)
    # Separating-axis test along the segment's normal: the corners all on one side?
    dx, dy = bx - ax, by - ay
    sides = [dx * (cy - ay) - dy * (cx - ax) for cx in (lx, hx) for cy in (ly, hy)]
    above = (sides[0] > 0) & (sides[1] > 0) & (sides[2] > 0) & (sides[3] > 0)
    below = (sides[0] < 0) & (sides[1] < 0) & (sides[2] < 0) & (sides[3] < 0)
    hit &= ~(above | below)
    near[owner[rep][hit], i[hit], j[hit]] = True
    return near


def _settle(
    near: np.ndarray[Any, Any], geometries: Any, x0: float, y0: float, wx: float, wy: float
) -> np.ndarray[Any, Any]:
    """Status per (square, shop): TEST where near, else IN/OUT from one exact test per run of
    consecutive clear squares in a row (no boundary crosses between them)."""
    n = near.shape[0]
    clear = ~near.reshape(n * G, G)
    starts = clear.copy()
    starts[:, 1:] &= near.reshape(n * G, G)[:, :-1]
    rows, cols = np.nonzero(starts)
    if len(rows) == 0:
        return np.full((G * G, n), TEST, dtype=np.uint8)
    shop, i = np.divmod(rows, G)
    inside = shapely.intersects_xy(geometries[shop], x0 + (i + 0.5) * wx, y0 + (cols + 0.5) * wy)
    run = np.cumsum(starts.ravel()) - 1  # each clear square's run is the latest start
    status = np.where(clear.ravel(), np.where(inside[run], IN, OUT), TEST).astype(np.uint8)
    return np.ascontiguousarray(status.reshape(n, G * G).T)
