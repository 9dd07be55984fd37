"""Compiled per-cell entries of a `ZoneIndex`: what one H3 cell answers without set building.

An entry is ``(interior ids, raster or None, edge ids, edge geometries)``: the shops whose zone
holds the whole cell, then the edge shops with their prepared geometries (numpy object arrays,
or None when the cell has no edge shop).

Raster: in a dense city a res-9 edge cell has ~20 zone boundaries through it, and a prepared
point-in-polygon test costs ~1 µs once caches are cold. So an edge cell with several edge
shops is split into a _G x _G grid of lng/lat squares, and each square keeps only the edge
shops whose boundary passes near it; the others are settled for the whole square. That leaves
a few exact tests per query instead of ~20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from h3.api import basic_int as h3

__all__ = ["EMPTY", "Entry", "G", "compile_cell"]

Entry = tuple[tuple[str, ...], Any, Any, Any]
EMPTY: Entry = ((), None, None, None)
G = 8  # squares per side of a raster
_RASTER_MIN_EDGES = 4  # below this, testing every edge zone is as cheap as the raster


def compile_cell(
    cell: int, margin: float, interior: tuple[str, ...], ids: Any, geometries: Any, boundaries: Any
) -> Entry:
    """Entry for `cell`; `ids`, `geometries`, `boundaries` (numpy object arrays, aligned, or
    None) describe its edge shops; `margin` is the cover's edge margin in degrees."""
    if ids is None or len(ids) == 0:
        return (interior, None, None, None)
    raster = None
    if len(ids) >= _RASTER_MIN_EDGES:
        raster = _raster(cell, margin, ids, geometries, boundaries)
    return (interior, raster, ids, geometries)


def _raster(cell: int, margin: float, ids: Any, geometries: Any, boundaries: Any) -> Any:
    """Split an edge cell into G x G lng/lat squares and settle what each square can settle.

    Each square is tested grown by `margin`. A zone whose boundary misses the grown square
    contains all of it or none of it (decided at its centre); only zones whose boundary meets
    it keep an exact test. Queries place a point in a square with float arithmetic, off by far
    less than the margin, so the point is always inside the grown square it is sent to; points
    outside the grid fall back to the cell's full edge list. Returns (x0, y0, 1/width,
    1/height, squares) with squares[i * G + j] = (inside ids, edge ids, edge geometries), or
    None for a cell straddling the antimeridian.
    """
    latlng = np.array(h3.cell_to_boundary(cell))
    lo = latlng.min(axis=0) - margin
    hi = latlng.max(axis=0) + margin
    if hi[1] - lo[1] > 180.0:
        return None
    (y0, x0), (y1, x1) = lo.tolist(), hi.tolist()
    wx, wy = (x1 - x0) / G, (y1 - y0) / G
    i, j = np.divmod(np.arange(G * G), G)
    xmin, ymin = x0 + i * wx, y0 + j * wy
    grown = shapely.box(xmin - margin, ymin - margin, xmin + wx + margin, ymin + wy + margin)
    # Clipping the boundaries first keeps the intersection tests small; clipping is inexact
    # only on the clip rectangle, which stays well clear of every grown square.
    pad = 4 * margin
    lines = shapely.clip_by_rect(boundaries, x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    near = shapely.intersects(lines[:, None], grown[None, :])
    inside = shapely.intersects_xy(geometries[:, None], xmin + wx / 2, ymin + wy / 2) & ~near
    squares = []
    shared: dict[bytes, Any] = {}  # many squares settle identically; store each variant once
    for k in range(G * G):
        key = inside[:, k].tobytes() + near[:, k].tobytes()
        square = shared.get(key)
        if square is None:
            edge = np.flatnonzero(near[:, k])
            square = (
                tuple(ids[inside[:, k]].tolist()),
                ids[edge] if len(edge) else None,
                geometries[edge] if len(edge) else None,
            )
            shared[key] = square
        squares.append(square)
    return (x0, y0, 1.0 / wx, 1.0 / wy, tuple(squares))
