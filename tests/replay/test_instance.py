from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import (
    Instance,
    InstanceError,
    Parameters,
    Restaurant,
    load_instance,
    travel_minutes,
    write_instance,
)

VALID = {
    "restaurants.txt": "restaurant\tx\ty\nr1\t100\t200\nr2\t1500.5\t300\n",
    "orders.txt": (
        "order\tx\ty\tplacement_time\trestaurant\tready_time\n"
        "o1\t900\t700\t10\tr1\t25\n"
        "o2\t1000\t800\t12\tr2\t30\n"
    ),
    "couriers.txt": "courier\tx\ty\ton_time\toff_time\nc1\t0\t0\t0\t120\n",
    "instance_parameters.txt": (
        "meters_per_minute\tpickup service minutes\tdropoff service minutes\t"
        "target click-to-door\tmaximum click-to-door\tpay per order\tguaranteed pay per hour\n"
        "320\t4\t4\t40\t90\t10\t15\n"
    ),
}


def _write_files(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_loads_the_published_format(tmp_path: Path) -> None:
    inst = load_instance(_write_files(tmp_path / "0o100t100s1p100", VALID))
    assert inst.name == "0o100t100s1p100"
    assert inst.restaurants["r2"] == Restaurant("r2", 1500.5, 300)
    assert inst.orders["o2"].restaurant == "r2"
    assert (inst.orders["o1"].placement_time, inst.orders["o1"].ready_time) == (10, 25)
    assert inst.couriers["c1"].off_time == 120
    assert inst.parameters == Parameters(320, 4, 4, 40, 90, 10, 15)


def _mess(text: str) -> str:
    """Blank lines, CRLF, spaces around the tabs and trailing spaces."""
    lines = (line.replace("\t", " \t  ") + "  " for line in text.splitlines())
    return "\n\n" + "\r\n".join(lines) + "\r\n\n"


def test_tolerates_extra_whitespace_and_blank_lines(tmp_path: Path) -> None:
    messy = {name: _mess(text) for name, text in VALID.items()}
    clean = load_instance(_write_files(tmp_path / "clean", VALID))
    assert load_instance(_write_files(tmp_path / "messy", messy)) == replace(clean, name="messy")


def test_round_trip_of_a_generated_instance(tmp_path: Path) -> None:
    inst = generate_instance(60, seed=3)
    write_instance(inst, tmp_path / inst.name)
    assert load_instance(tmp_path / inst.name) == inst


def test_round_trip_keeps_fractions_and_string_ids(tmp_path: Path) -> None:
    inst = load_instance(_write_files(tmp_path / "frac", VALID))
    write_instance(inst, tmp_path / "again")
    again = load_instance(tmp_path / "again")
    assert again.restaurants == inst.restaurants
    assert again.orders == inst.orders
    assert list(again.orders) == ["o1", "o2"]
    assert "1500.5" in (tmp_path / "again" / "restaurants.txt").read_text()


def _broken(file: str, old: str, new: str) -> dict[str, str]:
    assert old in VALID[file]
    return {**VALID, file: VALID[file].replace(old, new)}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            _broken("orders.txt", "o2\t1000\t800\t12\tr2\t30", "o2\t1000\t800\t12\tr2"),
            "orders.txt, line 3: expected 6 fields",
        ),
        (_broken("orders.txt", "o1\t900", "o1\tabc"), "orders.txt, line 2: x is not a number: 'abc'"),
        (_broken("orders.txt", "\tr2\t30", "\tr9\t30"), "orders.txt, line 3: unknown restaurant 'r9'"),
        (_broken("orders.txt", "o2\t", "o1\t"), "orders.txt, line 3: duplicate id 'o1'"),
        (_broken("orders.txt", "o2\t", "r1\t"), "orders.txt, line 3: duplicate id 'r1'"),
        (_broken("orders.txt", "\t12\tr2\t30", "\t12\tr2\t11"), "orders.txt, line 3: ready_time is before"),
        (
            _broken("orders.txt", "10\tr1\t25", "nan\tr1\t25"),
            "orders.txt, line 2: placement_time is not finite",
        ),
        (_broken("restaurants.txt", "r1\t", "0\t"), "restaurants.txt, line 2: id '0' is reserved"),
        (
            _broken("restaurants.txt", "restaurant\tx\ty\n", ""),
            "restaurants.txt, line 1: expected a header line",
        ),
        (
            _broken("couriers.txt", "\t0\t120", "\t130\t120"),
            "couriers.txt, line 2: off_time is before on_time",
        ),
        (
            _broken("instance_parameters.txt", "320\t", "0\t"),
            "instance_parameters.txt, line 2: meters_per_minute",
        ),
        (
            _broken("instance_parameters.txt", "\t15\n", "\t15\n1\t1\t1\t1\t1\t1\t1\n"),
            "instance_parameters.txt: expected one data line, got 2",
        ),
        ({**VALID, "couriers.txt": ""}, "couriers.txt: empty file"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    with pytest.raises(InstanceError) as err:
        load_instance(_write_files(tmp_path / "bad", files))
    assert expected in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    files = dict(VALID)
    del files["couriers.txt"]
    with pytest.raises(InstanceError, match=r"couriers\.txt: file not found"):
        load_instance(_write_files(tmp_path / "bad", files))


@pytest.mark.parametrize(("dx", "minutes"), [(0, 0), (1, 1), (320, 1), (321, 2), (640, 2), (3200.5, 11)])
def test_travel_minutes_rounds_up(dx: float, minutes: int) -> None:
    params = Parameters(320, 4, 4, 40, 90, 10, 15)
    assert travel_minutes(Restaurant("a", 0, 0), Restaurant("b", dx, 0), params) == minutes
    # A 3-4-5 triangle: exactly 5 * 64 = 320 metres.
    assert travel_minutes(Restaurant("a", 0, 0), Restaurant("b", 192, 256), params) == 1


def test_place_resolves_start_restaurant_and_order() -> None:
    inst: Instance = generate_instance(10, seed=0)
    order = inst.orders["o1"]
    assert inst.place("0", "c1") == inst.couriers["c1"]
    assert inst.place(order.restaurant, "c1") == inst.restaurants[order.restaurant]
    assert inst.place("o1", "c1") == order
    assert inst.has_place("o1") and inst.has_place("0") and not inst.has_place("c1")
