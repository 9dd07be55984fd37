"""Shop locations bucketed by H3 cell, for nearest-first search."""

from __future__ import annotations

import functools
import heapq
import sys
from collections.abc import Iterable

import numpy as np
from h3 import H3BaseException
from h3.api import basic_int as h3

from geo.distance import haversine_m, haversine_m_array
from geo.errors import CoordinateError

__all__ = ["LocationIndex", "check_point"]


def check_point(lat: float, lng: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also rejects NaN
        raise CoordinateError(f"invalid point lat={lat!r}, lng={lng!r}")


class LocationIndex:
    """Points keyed by shop id, bucketed by their H3 cell at `resolution`."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self._points: dict[str, tuple[float, float, int]] = {}  # id -> (lat, lng, cell)
        self._cells: dict[int, dict[str, tuple[float, float]]] = {}
        # The same points as rows of two arrays, for `nearest_of` to measure many at once without
        # building an array per call; a removed shop's row is NaN until a new shop takes it.
        self._row_of: dict[str, int] = {}
        self._free_rows: list[int] = []
        self._lats = np.full(64, np.nan)
        self._lngs = np.full(64, np.nan)

    def __len__(self) -> int:
        return len(self._points)

    def __contains__(self, shop_id: object) -> bool:
        return shop_id in self._points

    def ids(self) -> set[str]:
        return set(self._points)

    def set(self, shop_id: str, lat: float, lng: float) -> None:
        check_point(lat, lng)
        self.remove(shop_id)
        cell = h3.latlng_to_cell(lat, lng, self.resolution)
        self._points[shop_id] = (lat, lng, cell)
        self._cells.setdefault(cell, {})[shop_id] = (lat, lng)
        row = self._free_rows.pop() if self._free_rows else len(self._row_of)
        if row >= len(self._lats):
            self._lats = np.concatenate([self._lats, np.full(len(self._lats), np.nan)])
            self._lngs = np.concatenate([self._lngs, np.full(len(self._lngs), np.nan)])
        self._row_of[shop_id] = row
        self._lats[row], self._lngs[row] = lat, lng

    def get(self, shop_id: str) -> tuple[float, float] | None:
        point = self._points.get(shop_id)
        return None if point is None else (point[0], point[1])

    def remove(self, shop_id: str) -> bool:
        old = self._points.pop(shop_id, None)
        if old is None:
            return False
        bucket = self._cells[old[2]]
        del bucket[shop_id]
        if not bucket:
            del self._cells[old[2]]
        row = self._row_of.pop(shop_id)
        self._lats[row] = self._lngs[row] = np.nan
        self._free_rows.append(row)
        return True

    def nearest(self, lat: float, lng: float, k: int, max_distance_m: float) -> list[tuple[str, float]]:
        """Up to k (shop id, metres) within max_distance_m, nearest first, ties by id.

        Walks H3 rings outward from the point's cell. Any path from the point to a cell
        beyond ring d crosses ring d, so the least, over ring d's cells, of (distance to the
        cell centre - the cell's circumradius) bounds the distance to every shop not yet
        seen. The walk stops once that bound exceeds max_distance_m, or the k-th best found
        is already closer, or every shop has been seen; when a ring would have more cells
        than there are unseen shops it measures all shops instead.
        """
        check_point(lat, lng)
        if k <= 0 or not max_distance_m >= 0:
            return []
        origin = h3.latlng_to_cell(lat, lng, self.resolution)
        found: list[tuple[float, str]] = []
        seen, d = 0, 0
        while seen < len(self._points):
            if 6 * d > len(self._points) - seen:
                # The next ring has more cells than there are unseen shops (sparse map, long
                # range): measuring every shop is cheaper than walking on.
                return _nearest_k(self._scan(lat, lng, max_distance_m), k)
            ring = [origin] if d == 0 else _grid_ring(origin, d)
            if d > 0:
                bound = min(_cell_lower_bound(lat, lng, cell) for cell in ring)
                if bound > max_distance_m:
                    break
                if len(found) >= k and heapq.nsmallest(k, found)[-1][0] < bound:
                    break
            for cell in ring:
                bucket = self._cells.get(cell)
                if bucket:
                    seen += len(bucket)
                    found.extend(_within(bucket, lat, lng, max_distance_m))
            d += 1
        return _nearest_k(found, k)

    def nearest_of(self, lat: float, lng: float, shop_ids: Iterable[str], k: int) -> list[str]:
        """The `k` of `shop_ids` nearest to (lat, lng), nearest first, ties by id; ids without a location
        come last (by id). Vectorised over the location arrays: an order measures the few dozen shops
        delivering to its door at C speed, and only the chosen ones become Python objects again."""
        if k <= 0:
            return []
        ids = shop_ids if isinstance(shop_ids, list) else list(shop_ids)
        get = self._row_of.get
        rows = np.fromiter((get(s, -1) for s in ids), dtype=np.intp, count=len(ids))
        located = np.flatnonzero(rows >= 0)
        unknown = sorted(ids[i] for i in np.flatnonzero(rows < 0).tolist()) if len(located) < len(ids) else []
        if not len(located):
            return unknown[:k]
        at = rows[located]
        metres = haversine_m_array(lat, lng, self._lats[at], self._lngs[at])
        if len(located) > k:
            # Everything as near as the k-th nearest, so that ties at the cut are settled by id.
            cut = np.partition(metres, k - 1)[k - 1]
            chosen = np.flatnonzero(metres <= cut)
        else:
            chosen = np.arange(len(located))
        ranked = sorted(zip(metres[chosen].tolist(), (ids[i] for i in located[chosen].tolist()), strict=True))
        return ([s for _, s in ranked] + unknown)[:k]

    def _scan(self, lat: float, lng: float, max_distance_m: float) -> list[tuple[float, str]]:
        return [pair for bucket in self._cells.values() for pair in _within(bucket, lat, lng, max_distance_m)]

    def memory_bytes(self) -> int:
        size = sys.getsizeof
        total = size(self._points) + size(self._cells)
        total += sum(size(bucket) for bucket in self._cells.values())
        total += size(self._row_of) + self._lats.nbytes + self._lngs.nbytes
        return total + (64 + 2 * 24 + 32) * len(self._points)


def _within(
    bucket: dict[str, tuple[float, float]], lat: float, lng: float, max_distance_m: float
) -> list[tuple[float, str]]:
    pairs = [(haversine_m(lat, lng, slat, slng), shop_id) for shop_id, (slat, slng) in bucket.items()]
    return [pair for pair in pairs if pair[0] <= max_distance_m]


def _nearest_k(found: list[tuple[float, str]], k: int) -> list[tuple[str, float]]:
    return [(shop_id, dist) for dist, shop_id in heapq.nsmallest(k, found)]


def _grid_ring(origin: int, d: int) -> list[int]:
    try:
        return list(h3.grid_ring(origin, d))
    except H3BaseException:  # pentagon distortion: fall back to the difference of disks
        return list(set(h3.grid_disk(origin, d)) - set(h3.grid_disk(origin, d - 1)))


def _cell_lower_bound(lat: float, lng: float, cell: int) -> float:
    """Lower bound on the distance in metres from (lat, lng) to any point of `cell`."""
    clat, clng, radius = _cell_disk(cell)
    return haversine_m(lat, lng, clat, clng) - radius


@functools.lru_cache(maxsize=65_536)
def _cell_disk(cell: int) -> tuple[float, float, float]:
    """A cell's centre and a radius (metres) that encloses it."""
    clat, clng = h3.cell_to_latlng(cell)
    radius = max(haversine_m(clat, clng, vlat, vlng) for vlat, vlng in h3.cell_to_boundary(cell))
    # The farthest point of a (spherically convex) cell is a vertex; the slack covers the
    # great-circle edges of cells split across icosahedron faces, and rounding.
    return clat, clng, radius * 1.01 + 1.0
