"""Cover a zone with H3 cells, split into interior cells and edge cells.

Guarantees, for every point p of the zone (boundary included) with c = latlng_to_cell(p):
c is in the cover; and for every interior cell, every point that maps to it lies in the zone.

Why a margin: `cell_to_boundary` gives a cell's vertices, but the region of points that H3
assigns to the cell has great-circle edges (straight in H3's gnomonic face projection), which
bulge away from the straight lng/lat chord by up to L²·tan(lat)/(8R) for an edge of length L.
Every cell is therefore tested as its lng/lat hexagon grown by `edge_margin_deg(resolution)`,
well above that bulge (about 1e-7 degrees at resolution 9, measured; the margin is ~1e-5):
  - edge:     the hexagon comes within the margin of the zone's boundary;
  - interior: the hexagon intersects the zone and stays farther than the margin from its
              boundary, so the whole grown hexagon, and thus the true cell, is inside.
Candidates are h3's centre polyfill (every interior cell has its centre in the zone) and the
cells of every vertex, grown by a flood fill over the neighbours of every edge cell, which
walks each ring's connected chain of edge cells. No step trusts h3's own planar polygon tests
near the boundary. Extra edge cells only cost an exact test at query time; a missing cell or
a wrongly interior cell would be a wrong answer.

Bounded work: with `max_cells`, a zone whose cover would need more cells is refused
(`zone_too_complex`) before any H3 work when its area and boundary length already say so
(h3's polyfill and the flood fill both cost in proportion to them), and otherwise as soon as
the cover being built passes the limit. A comb of long thin teeth has little area but a
boundary of thousands of kilometres; it is refused in microseconds instead of covered in
minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from h3 import H3BaseException
from h3.api import basic_int as h3

from geo.distance import EARTH_RADIUS_M
from geo.errors import GeoError, ZoneError
from geo.zones import Zone, zone_area_km2

__all__ = ["DEFAULT_RESOLUTION", "Cover", "cover_zone", "edge_margin_deg", "estimated_cells"]

DEFAULT_RESOLUTION = 9
MIN_RESOLUTION, MAX_RESOLUTION = 5, 15
_MAX_LAT = 85.0
# Cells classified between two checks of `max_cells`: the overshoot a refused zone may cost.
_CHUNK = 2048


@dataclass(frozen=True, slots=True)
class Cover:
    """H3 cells (integer ids) covering a zone at one resolution; the two sets are disjoint."""

    interior: frozenset[int]
    edge: frozenset[int]
    resolution: int

    def __len__(self) -> int:
        return len(self.interior) + len(self.edge)


def check_resolution(resolution: int) -> None:
    if not (isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(
            f"H3 resolution must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution!r}"
        )


def edge_margin_deg(resolution: int) -> float:
    """Margin, in degrees, by which cell hexagons are grown before classifying them.

    Ten times the worst-case bulge of a great-circle cell edge at latitude 85 (where a degree
    of longitude is shortest), for an edge three times the resolution's average length.
    """
    check_resolution(resolution)
    edge = 3.0 * h3.average_hexagon_edge_length(resolution, "m")
    lat = math.radians(_MAX_LAT)
    bulge_rad = edge * edge * math.tan(lat) / (8.0 * EARTH_RADIUS_M**2 * math.cos(lat))
    return max(10.0 * math.degrees(bulge_rad), 1e-9)


def estimated_cells(geometry: Any, resolution: int) -> float:
    """A low estimate of how many cells cover `geometry` (lng/lat Polygon or MultiPolygon): its area
    in cells plus its boundary length in four cell edges. A boundary crosses about 0.74 cells per
    edge length (Cauchy-Crofton for hexagons), or half that where a thin sliver's two sides share
    cells, so real covers are larger unless the boundary zigzags inside cells."""
    check_resolution(resolution)
    point = shapely.get_coordinates(geometry)[0]
    cell_area_m2 = float(h3.cell_area(h3.latlng_to_cell(float(point[1]), float(point[0]), resolution), "m^2"))
    edge_m = math.sqrt(2.0 * cell_area_m2 / (3.0 * math.sqrt(3.0)))  # of a regular hexagon that size
    area_m2 = zone_area_km2(geometry) * 1e6
    return area_m2 / cell_area_m2 + boundary_length_m(geometry) / (4.0 * edge_m)


def boundary_length_m(geometry: Any) -> float:
    """Total length in metres (haversine) of the rings of a lng/lat Polygon or MultiPolygon."""
    total = 0.0
    for ring in shapely.get_rings(shapely.get_parts(geometry)).tolist():
        xy = np.radians(shapely.get_coordinates(ring))
        lng, lat = xy[:, 0], xy[:, 1]
        dlng, dlat = np.diff(lng), np.diff(lat)
        a = np.sin(dlat / 2.0) ** 2 + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(dlng / 2.0) ** 2
        total += float(np.sum(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))))
    return total


def cover_zone(
    zone_geometry: Zone | Any, resolution: int = DEFAULT_RESOLUTION, max_cells: int | None = None
) -> Cover:
    """Cover a zone (a `Zone` or a shapely Polygon/MultiPolygon in lng/lat) with H3 cells.

    With `max_cells`, raise ZoneError `zone_too_complex` rather than build a larger cover; the work
    done on such a zone is bounded by the limit (see the module docstring)."""
    geometry = zone_geometry.geometry if isinstance(zone_geometry, Zone) else zone_geometry
    margin = edge_margin_deg(resolution)
    if getattr(geometry, "geom_type", None) not in ("Polygon", "MultiPolygon") or geometry.is_empty:
        raise GeoError("a zone must be a non-empty Polygon or MultiPolygon")
    is_circle = isinstance(zone_geometry, Zone) and zone_geometry.circle is not None
    path: list[str | int] = ["radius_m"] if is_circle else ["coordinates"]
    if max_cells is not None:
        estimate = estimated_cells(geometry, resolution)
        if estimate > max_cells:
            raise _too_complex(max_cells, resolution, path, f"about {estimate:,.0f}")
    try:
        boundary = shapely.boundary(geometry)
        shapely.prepare(geometry)
        shapely.prepare(boundary)
        # Interior cells have their centre in the zone, so h3's centre polyfill lists them all;
        # edge cells are reached from the cells of the vertices, ring by ring.
        todo = set(
            h3.h3shape_to_cells_experimental(
                h3.geo_to_h3shape(geometry.__geo_interface__), resolution, "center"
            )
        )
        todo.update(
            h3.latlng_to_cell(lat, lng, resolution) for lng, lat in shapely.get_coordinates(geometry).tolist()
        )
        interior: set[int] = set()
        edge: set[int] = set()
        seen = set(todo)
        while todo:
            batch = list(todo)
            todo = set()
            for start in range(0, len(batch), _CHUNK):
                cells = batch[start : start + _CHUNK]
                hexes = cell_polygons(cells)
                near = shapely.dwithin(boundary, hexes, margin).tolist()
                inside = shapely.intersects(geometry, hexes).tolist()
                for cell, is_near, is_inside in zip(cells, near, inside, strict=True):
                    if is_near:
                        edge.add(cell)
                        todo.update(h3.grid_disk(cell, 1))
                    elif is_inside:
                        interior.add(cell)
                if max_cells is not None and len(interior) + len(edge) > max_cells:
                    raise _too_complex(max_cells, resolution, path, "more")
            todo -= seen
            seen |= todo
    except (shapely.errors.ShapelyError, H3BaseException) as exc:
        raise GeoError(f"cannot cover zone: {exc}") from exc
    return Cover(frozenset(interior), frozenset(edge), resolution)


def _too_complex(max_cells: int, resolution: int, path: list[str | int], needed: str) -> ZoneError:
    return ZoneError(
        "zone_too_complex",
        f"covering the zone at H3 resolution {resolution} needs {needed} cells, more than the limit of "
        f"{max_cells:,}: its area or the length of its boundary is too large (long thin strips and "
        "deep zigzags make long boundaries)",
        path,
    )


def cell_polygons(cells: list[int]) -> Any:
    """Lng/lat polygons of cells (straight edges between H3's vertices), as a numpy object
    array aligned with `cells`.

    A cell straddling the antimeridian becomes two copies, unwrapped east and west of it, so
    that it meets zones on either side (zones themselves never cross it).
    """
    if not cells:
        return np.empty(0, dtype=object)
    boundaries = [h3.cell_to_boundary(cell) for cell in cells]
    counts = np.fromiter((len(b) for b in boundaries), dtype=np.intp, count=len(cells))
    latlng = np.array([p for b in boundaries for p in b], dtype=np.float64).reshape(-1, 2)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    lng = latlng[:, 1]
    wraps = (np.maximum.reduceat(lng, starts) - np.minimum.reduceat(lng, starts)) > 180.0
    rings = shapely.linearrings(lng, latlng[:, 0], indices=np.repeat(np.arange(len(cells)), counts))
    out = shapely.polygons(rings)
    for i in np.flatnonzero(wraps).tolist():
        ring = [(x + 360.0 if x < 0 else x, y) for y, x in boundaries[i]]
        west = [(x - 360.0, y) for x, y in ring]
        out[i] = shapely.MultiPolygon([shapely.Polygon(ring), shapely.Polygon(west)])
    return out
