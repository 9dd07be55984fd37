"""`ZoneIndex`: which shops deliver to a point, and which shops are nearest to it.

Containment rule: a point is in a zone when the zone *covers* it, i.e. exactly
``zone.covers(Point(lng, lat))`` in shapely's planar lng/lat geometry: points on the exterior
ring or on a hole's ring count as inside (a resident on the boundary line is served).

Each zone's `Cover` (see geo.cover) sorts H3 cells into interior cells, answered by a lookup,
and edge cells, settled by the shop's prepared shapely geometry. Per cell the index keeps a
compiled entry: a tuple of interior shop ids plus numpy arrays of edge shop ids and their
prepared geometries, so a query is one `latlng_to_cell`, one dict lookup and at most one
vectorised `shapely.intersects_xy` call (whose cost is mostly fixed, however many zones).
Entries are compiled lazily: `set_zone` and `remove` only drop the entries of the cells they
touch, so loading 10,000 stored covers does no per-cell work beyond set insertions.
"""

from __future__ import annotations

import heapq
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from h3 import H3BaseException
from h3.api import basic_int as h3

from geo.cover import DEFAULT_RESOLUTION, Cover, check_resolution, cover_zone
from geo.distance import haversine_m
from geo.errors import CoordinateError, GeoError
from geo.zones import Zone

__all__ = ["ZoneIndex"]

# (interior shop ids, edge shop ids or None, their prepared geometries or None)
_Entry = tuple[tuple[str, ...], Any, Any]
_EMPTY: _Entry = ((), None, None)


@dataclass(frozen=True, slots=True)
class _ShopZone:
    geometry: Any
    cover: Cover


def _check_point(lat: float, lng: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also rejects NaN
        raise CoordinateError(f"invalid point lat={lat!r}, lng={lng!r}")


class ZoneIndex:
    """In-memory index of shops' delivery zones and locations (not thread-safe).

    `shops_delivering_to(lat, lng)` returns exactly the shops whose zone covers the point:
    the same answer as ``zone.covers(shapely.Point(lng, lat))`` for every zone, boundary
    points (exterior and hole rings) counting as inside.
    """

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, location_resolution: int = 8) -> None:
        check_resolution(resolution)
        check_resolution(location_resolution)
        self.resolution = resolution
        self.location_resolution = location_resolution
        self._zones: dict[str, _ShopZone] = {}
        self._interior: dict[int, set[str]] = {}
        self._edge: dict[int, dict[str, Any]] = {}  # cell -> {shop id: prepared geometry}
        self._compiled: dict[int, _Entry] = {}
        self._locations: dict[str, tuple[float, float, int]] = {}  # shop -> (lat, lng, cell)
        self._location_cells: dict[int, dict[str, tuple[float, float]]] = {}

    # --- zones ---------------------------------------------------------------------------

    def set_zone(
        self,
        shop_id: str,
        zone_geometry: Zone | Any,
        cover: Cover | None = None,
        location: tuple[float, float] | None = None,
    ) -> Cover:
        """Add or replace a shop's zone (a `Zone` or a shapely Polygon/MultiPolygon in lng/lat).

        Pass `cover` when it is already known (loaded from the database) to skip computing
        it; it must be the cover of this geometry at the index's resolution. `location` is
        the shop's (lat, lng), as for `set_location`. Returns the cover used.
        """
        geometry = zone_geometry.geometry if isinstance(zone_geometry, Zone) else zone_geometry
        if getattr(geometry, "geom_type", None) not in ("Polygon", "MultiPolygon"):
            raise GeoError(f"zone of shop {shop_id!r} must be a Polygon or MultiPolygon")
        if cover is None:
            cover = cover_zone(geometry, self.resolution)
        elif cover.resolution != self.resolution:
            raise GeoError(
                f"cover of shop {shop_id!r} has resolution {cover.resolution}, "
                f"the index uses {self.resolution}"
            )
        if location is not None:
            _check_point(*location)
        self._remove_zone(shop_id)
        shapely.prepare(geometry)
        self._zones[shop_id] = _ShopZone(geometry, cover)
        compiled = self._compiled
        interior = self._interior
        for cell in cover.interior:
            ids = interior.get(cell)
            if ids is None:
                interior[cell] = {shop_id}
            else:
                ids.add(shop_id)
            if compiled:
                compiled.pop(cell, None)
        edge = self._edge
        for cell in cover.edge:
            entries = edge.get(cell)
            if entries is None:
                edge[cell] = {shop_id: geometry}
            else:
                entries[shop_id] = geometry
            if compiled:
                compiled.pop(cell, None)
        if location is not None:
            self.set_location(shop_id, *location)
        return cover

    def remove(self, shop_id: str) -> bool:
        """Forget a shop's zone and location; False if the index did not know the shop."""
        had_zone = self._remove_zone(shop_id)
        had_location = self._remove_location(shop_id)
        return had_zone or had_location

    def _remove_zone(self, shop_id: str) -> bool:
        old = self._zones.pop(shop_id, None)
        if old is None:
            return False
        for cell in old.cover.interior:
            ids = self._interior[cell]
            ids.discard(shop_id)
            if not ids:
                del self._interior[cell]
            self._compiled.pop(cell, None)
        for cell in old.cover.edge:
            entries = self._edge[cell]
            entries.pop(shop_id, None)
            if not entries:
                del self._edge[cell]
            self._compiled.pop(cell, None)
        return True

    def shops_delivering_to(self, lat: float, lng: float) -> list[str]:
        """Ids of the shops whose zone covers (lat, lng), boundary included.

        Interior-cell shops come first (sorted), then matching edge-cell shops (sorted).
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise CoordinateError(f"invalid point lat={lat!r}, lng={lng!r}")
        cell = h3.latlng_to_cell(lat, lng, self.resolution)
        entry = self._compiled.get(cell)
        if entry is None:
            entry = self._compile(cell)
        interior, edge_ids, edge_geometries = entry
        if edge_ids is None:
            return list(interior)
        hits = edge_ids[shapely.intersects_xy(edge_geometries, lng, lat)]
        return [*interior, *hits.tolist()]

    def _compile(self, cell: int) -> _Entry:
        interior = self._interior.get(cell)
        edge = self._edge.get(cell)
        if not interior and not edge:
            return _EMPTY  # not stored: queries all over the map must not grow the dict
        ids = tuple(sorted(interior)) if interior else ()
        if edge:
            edge_ids = sorted(edge)
            geometries = np.empty(len(edge_ids), dtype=object)
            geometries[:] = [edge[shop_id] for shop_id in edge_ids]
            entry: _Entry = (ids, np.array(edge_ids, dtype=object), geometries)
        else:
            entry = (ids, None, None)
        self._compiled[cell] = entry
        return entry

    def warm(self) -> None:
        """Compile every cell now rather than on its first query (e.g. after a bulk load)."""
        for cell in self._interior.keys() | self._edge.keys():
            if cell not in self._compiled:
                self._compile(cell)

    def zone_of(self, shop_id: str) -> Any:
        """The shop's zone geometry (shapely, lng/lat); KeyError if it has none."""
        return self._zones[shop_id].geometry

    def cover_of(self, shop_id: str) -> Cover:
        """The shop's cover; KeyError if it has no zone."""
        return self._zones[shop_id].cover

    def cell_count(self, shop_id: str) -> int:
        """Number of H3 cells (interior and edge) covering the shop's zone."""
        return len(self._zones[shop_id].cover)

    # --- locations -------------------------------------------------------------------------

    def set_location(self, shop_id: str, lat: float, lng: float) -> None:
        """Set or move a shop's location (the point `nearest_shops` measures from)."""
        _check_point(lat, lng)
        self._remove_location(shop_id)
        cell = h3.latlng_to_cell(lat, lng, self.location_resolution)
        self._locations[shop_id] = (lat, lng, cell)
        self._location_cells.setdefault(cell, {})[shop_id] = (lat, lng)

    def location_of(self, shop_id: str) -> tuple[float, float] | None:
        entry = self._locations.get(shop_id)
        return None if entry is None else (entry[0], entry[1])

    def _remove_location(self, shop_id: str) -> bool:
        old = self._locations.pop(shop_id, None)
        if old is None:
            return False
        shops = self._location_cells[old[2]]
        del shops[shop_id]
        if not shops:
            del self._location_cells[old[2]]
        return True

    def nearest_shops(self, lat: float, lng: float, k: int, max_distance_m: float) -> list[tuple[str, float]]:
        """Up to `k` (shop id, metres) pairs within `max_distance_m` of (lat, lng) by
        haversine distance between locations, nearest first (ties by shop id).

        Walks H3 rings outward from the point's cell. Before each ring it computes a lower
        bound on the distance to anything in that ring or beyond (any path outward crosses
        the ring): the least over the ring's cells of centre distance minus circumradius.
        It stops when that bound exceeds `max_distance_m`, or k shops are already that close,
        or every located shop has been seen.
        """
        _check_point(lat, lng)
        if k <= 0 or not max_distance_m >= 0:
            return []
        origin = h3.latlng_to_cell(lat, lng, self.location_resolution)
        found: list[tuple[float, str]] = []
        seen, total, d = 0, len(self._locations), 0
        while seen < total:
            ring = [origin] if d == 0 else _grid_ring(origin, d)
            if d > 0:
                bound = min(_cell_lower_bound(lat, lng, cell) for cell in ring)
                if bound > max_distance_m:
                    break
                if len(found) >= k and heapq.nsmallest(k, found)[-1][0] < bound:
                    break
            for cell in ring:
                shops = self._location_cells.get(cell)
                if shops:
                    seen += len(shops)
                    for shop_id, (slat, slng) in shops.items():
                        dist = haversine_m(lat, lng, slat, slng)
                        if dist <= max_distance_m:
                            found.append((dist, shop_id))
            d += 1
        return [(shop_id, dist) for dist, shop_id in heapq.nsmallest(k, found)]

    # --- size --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of shops with a zone or a location."""
        return len(self._zones.keys() | self._locations.keys())

    def __contains__(self, shop_id: object) -> bool:
        return shop_id in self._zones or shop_id in self._locations

    def memory_bytes(self) -> int:
        """Rough size of the index: Python containers, covers, compiled arrays, and GEOS
        geometries (estimated from vertex counts). Shop id strings are counted once."""
        size = sys.getsizeof
        total = sum(size(d) for d in (self._zones, self._interior, self._edge, self._compiled))
        total += sum(size(s) for s in self._interior.values())
        total += sum(size(e) for e in self._edge.values())
        for interior, ids, geometries in self._compiled.values():
            total += size(interior) + 64
            if ids is not None:
                total += ids.nbytes + geometries.nbytes + 2 * 112
        for shop_id, zone in self._zones.items():
            total += size(shop_id) + 64 + size(zone.cover.interior) + size(zone.cover.edge)
            total += 28 * len(zone.cover)  # the int objects
            # Coordinates (16 B) plus the prepared point-in-area index (~3x), plus headers.
            total += 64 * int(shapely.get_num_coordinates(zone.geometry)) + 512
        total += size(self._locations) + size(self._location_cells)
        total += sum(size(c) for c in self._location_cells.values())
        total += (64 + 2 * 24) * len(self._locations)
        return total


def _grid_ring(origin: int, d: int) -> list[int]:
    try:
        return list(h3.grid_ring(origin, d))
    except H3BaseException:  # pentagon distortion: fall back to the disk difference
        return list(set(h3.grid_disk(origin, d)) - set(h3.grid_disk(origin, d - 1)))


def _cell_lower_bound(lat: float, lng: float, cell: int) -> float:
    """Lower bound on the distance from (lat, lng) to any point of `cell`, in metres."""
    clat, clng = h3.cell_to_latlng(cell)
    radius = max(haversine_m(clat, clng, vlat, vlng) for vlat, vlng in h3.cell_to_boundary(cell))
    # Margin for the great-circle edges and rounding: the bound must never overshoot.
    return haversine_m(lat, lng, clat, clng) - radius * 1.01 - 1.0
