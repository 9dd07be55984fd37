"""`ZoneIndex`: which shops deliver to a point, and which shops are nearest to it.

Containment rule: a point is in a zone exactly when ``zone.covers(Point(lng, lat))`` in
shapely's planar lng/lat geometry: points on the exterior ring or on a hole's ring count as
inside (a resident on the boundary line is served).

Each zone's `Cover` (geo.cover) sorts H3 cells into interior cells, answered by a lookup, and
edge cells, settled by the shop's prepared shapely geometry. The index keeps, per cell, the
slots (small ints) of the shops covering it, and compiles a cell's answer structure (see
geo.cells) on its first query; changing a zone only drops the compiled entries of the cells
it touches. New covers are queued by `set_zone` and merged into the per-cell arrays in one
numpy pass before the next query, so loading 10,000 stored covers costs no Python loop over
their cells.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import shapely
from h3.api import basic_int as h3

from geo.cells import EMPTY, Entry, G, compile_cell, ring_segments
from geo.cover import DEFAULT_RESOLUTION, Cover, check_resolution, cover_zone, edge_margin_deg
from geo.errors import CoordinateError, GeoError
from geo.locations import LocationIndex, check_point
from geo.zones import Zone

__all__ = ["ZoneIndex"]

_SLOT = np.int32


class ZoneIndex:
    """In-memory index of shops' delivery zones and locations (not thread-safe).

    `shops_delivering_to(lat, lng)` returns exactly the shops whose zone covers the point:
    the same set as ``zone.covers(shapely.Point(lng, lat))`` over every zone, with points on
    an exterior or hole ring counting as inside.
    """

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, location_resolution: int = 8) -> None:
        check_resolution(resolution)
        check_resolution(location_resolution)
        self.resolution = resolution
        self._margin = edge_margin_deg(resolution)
        self._slot_of: dict[str, int] = {}
        self._ids = np.empty(0, dtype=object)  # slot -> shop id (None when free)
        self._geometries = np.empty(0, dtype=object)  # slot -> prepared zone geometry
        self._segments = np.empty(0, dtype=object)  # slot -> ring_segments(geometry), lazily
        self._covers: list[Cover | None] = []
        self._free: list[int] = []
        self._pending: dict[int, None] = {}  # slots whose covers are not yet in the cell maps
        self._interior: dict[int, np.ndarray[Any, Any]] = {}  # cell -> slots
        self._edge: dict[int, np.ndarray[Any, Any]] = {}
        self._compiled: dict[int, Entry] = {}
        self._locations = LocationIndex(location_resolution)

    # --- zones -------------------------------------------------------------------------------

    def set_zone(
        self,
        shop_id: str,
        zone_geometry: Zone | Any,
        cover: Cover | None = None,
        location: tuple[float, float] | None = None,
    ) -> Cover:
        """Add or replace a shop's zone (a `Zone` or a shapely Polygon/MultiPolygon in lng/lat).

        Pass `cover` when it is already known (loaded from the database) to skip computing
        it; it must be this geometry's cover at the index's resolution. `location` is the
        shop's (lat, lng), as for `set_location`. Returns the cover used.
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
            check_point(*location)
        self._remove_zone(shop_id)
        shapely.prepare(geometry)
        slot = self._allocate()
        self._slot_of[shop_id] = slot
        self._ids[slot] = shop_id
        self._geometries[slot] = geometry
        self._covers[slot] = cover
        self._pending[slot] = None
        if location is not None:
            self._locations.set(shop_id, *location)
        return cover

    def remove(self, shop_id: str) -> bool:
        """Forget a shop's zone and location; False if the index did not know the shop."""
        had_zone = self._remove_zone(shop_id)
        return self._locations.remove(shop_id) or had_zone

    def shops_delivering_to(self, lat: float, lng: float) -> list[str]:
        """Ids of the shops whose zone covers (lat, lng), boundary included.

        The order is deterministic but unspecified. Raises CoordinateError for a latitude
        outside [-90, 90], a longitude outside [-180, 180], or NaN.
        """
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
            raise CoordinateError(f"invalid point lat={lat!r}, lng={lng!r}")
        if self._pending:
            self._merge_pending()
        cell = h3.latlng_to_cell(lat, lng, self.resolution)
        entry = self._compiled.get(cell)
        if entry is None:
            entry = self._compile(cell)
        interior, raster, edge_ids, edge_geometries = entry
        if raster is not None:
            x0, y0, sx, sy, inside, test = raster
            fx = (lng - x0) * sx
            fy = (lat - y0) * sy
            if 0.0 <= fx < G and 0.0 <= fy < G:
                k = int(fx) * G + int(fy)
                hits = inside[k].copy()
                tested = test[k]
                hits[tested] = shapely.intersects_xy(edge_geometries[tested], lng, lat)
                return [*interior, *edge_ids[hits].tolist()]
        if edge_ids is None:
            return list(interior)
        hits = edge_ids[shapely.intersects_xy(edge_geometries, lng, lat)]
        return [*interior, *hits.tolist()]

    def warm(self) -> None:
        """Compile every cell now instead of on its first query (e.g. after a bulk load)."""
        self._merge_pending()
        for cell in self._interior.keys() | self._edge.keys():
            if cell not in self._compiled:
                self._compile(cell)

    def zone_of(self, shop_id: str) -> Any:
        """The shop's zone geometry (shapely, lng/lat); KeyError if it has none."""
        return self._geometries[self._slot_of[shop_id]]

    def cover_of(self, shop_id: str) -> Cover:
        """The shop's cover; KeyError if it has no zone."""
        cover = self._covers[self._slot_of[shop_id]]
        assert cover is not None
        return cover

    def cell_count(self, shop_id: str) -> int:
        """Number of H3 cells (interior and edge) covering the shop's zone."""
        return len(self.cover_of(shop_id))

    # --- locations ---------------------------------------------------------------------------

    def set_location(self, shop_id: str, lat: float, lng: float) -> None:
        """Set or move a shop's location, the point `nearest_shops` measures from."""
        self._locations.set(shop_id, lat, lng)

    def location_of(self, shop_id: str) -> tuple[float, float] | None:
        return self._locations.get(shop_id)

    def nearest_shops(self, lat: float, lng: float, k: int, max_distance_m: float) -> list[tuple[str, float]]:
        """Up to `k` (shop id, metres) pairs, shops whose location is within `max_distance_m`
        of (lat, lng) by haversine distance, nearest first (ties by shop id). Walks H3 rings
        outward and stops as soon as no unseen shop can be closer (see LocationIndex)."""
        return self._locations.nearest(lat, lng, k, max_distance_m)

    # --- size --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of shops with a zone or a location."""
        return len(self._slot_of.keys() | self._locations.ids())

    def __contains__(self, shop_id: object) -> bool:
        return shop_id in self._slot_of or shop_id in self._locations

    def memory_bytes(self) -> int:
        """Rough size of the index in bytes: containers, covers, compiled entries, and GEOS
        geometries (estimated from their vertex counts). Shop id strings are counted once."""
        size = sys.getsizeof
        seen: set[int] = set()
        total = sum(size(d) for d in (self._slot_of, self._interior, self._edge, self._compiled))
        total += sum(size(a) for a in (*self._interior.values(), *self._edge.values()))
        total += sum(_nested_size(entry, seen) for entry in self._compiled.values())
        total += size(self._ids) + size(self._geometries) + size(self._segments)
        for shop_id, slot in self._slot_of.items():
            cover = self._covers[slot]
            assert cover is not None
            total += size(shop_id) + size(cover.interior) + size(cover.edge) + 32 * len(cover)
            # Coordinates (16 B each) plus the prepared point-in-area index, plus headers.
            total += 64 * int(shapely.get_num_coordinates(self._geometries[slot])) + 512
            if self._segments[slot] is not None:
                total += size(self._segments[slot])
        return total + self._locations.memory_bytes()

    # --- internals ---------------------------------------------------------------------------

    def _ring_segments(self, slot: int) -> np.ndarray[Any, Any]:
        segments = self._segments[slot]
        if segments is None:
            segments = self._segments[slot] = ring_segments(self._geometries[slot])
        return segments  # type: ignore[no-any-return]

    def _allocate(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self._covers)
        if slot == len(self._ids):
            grow = max(64, slot)
            for name in ("_ids", "_geometries", "_segments"):
                setattr(self, name, np.concatenate((getattr(self, name), _objects(grow))))
        self._covers.append(None)
        return slot

    def _remove_zone(self, shop_id: str) -> bool:
        slot = self._slot_of.pop(shop_id, None)
        if slot is None:
            return False
        cover = self._covers[slot]
        assert cover is not None
        if slot in self._pending:
            del self._pending[slot]
        else:
            for cells, table in ((cover.interior, self._interior), (cover.edge, self._edge)):
                for cell in cells:
                    slots = table[cell]
                    slots = slots[slots != slot]
                    if len(slots):
                        table[cell] = slots
                    else:
                        del table[cell]
                    self._compiled.pop(cell, None)
        self._ids[slot] = self._geometries[slot] = self._segments[slot] = None
        self._covers[slot] = None
        self._free.append(slot)
        return True

    def _merge_pending(self) -> None:
        """Add the queued covers to the per-cell slot arrays, grouping cells with numpy."""
        slots = list(self._pending)
        self._pending.clear()
        covers = [self._covers[s] for s in slots]
        for part, table in (("interior", self._interior), ("edge", self._edge)):
            cell_sets = [getattr(c, part) for c in covers]
            sizes = [len(cells) for cells in cell_sets]
            if not sum(sizes):
                continue
            cells = np.fromiter(
                (cell for cells in cell_sets for cell in cells), dtype=np.uint64, count=sum(sizes)
            )
            owners = np.repeat(np.array(slots, dtype=_SLOT), sizes)
            order = np.argsort(cells, kind="stable")
            cells, owners = cells[order], owners[order]
            starts = np.flatnonzero(np.diff(cells)) + 1
            for cell, group in zip(
                cells[np.concatenate(([0], starts))].tolist(), np.split(owners, starts), strict=True
            ):
                old = table.get(cell)
                table[cell] = group if old is None else np.concatenate((old, group))
                if self._compiled:
                    self._compiled.pop(cell, None)

    def _compile(self, cell: int) -> Entry:
        interior_slots = self._interior.get(cell)
        edge_slots = self._edge.get(cell)
        if interior_slots is None and edge_slots is None:
            return EMPTY  # not stored: queries all over the map must not grow the dict
        interior = () if interior_slots is None else tuple(self._ids[interior_slots].tolist())
        ids = geometries = segments = None
        if edge_slots is not None:
            ids = self._ids[edge_slots]
            geometries = self._geometries[edge_slots]
            segments = [self._ring_segments(slot) for slot in edge_slots.tolist()]
        entry = compile_cell(cell, self._margin, interior, ids, geometries, segments)
        self._compiled[cell] = entry
        return entry


def _objects(n: int) -> np.ndarray[Any, Any]:
    return np.full(n, None, dtype=object)


def _nested_size(obj: Any, seen: set[int]) -> int:
    """Size of nested tuples and numpy arrays, each counted once (squares share them)."""
    if id(obj) in seen or not isinstance(obj, tuple | np.ndarray):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return sys.getsizeof(obj)
    return sys.getsizeof(obj) + sum(_nested_size(item, seen) for item in obj)
