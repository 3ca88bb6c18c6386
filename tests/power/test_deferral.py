"""The deferral policy on each condition: power supply (a folder laid out like the kernel's), window, carbon."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import ConfigError
from fogline.power import (
    CarbonFeed,
    DeferPolicy,
    Deferral,
    Verdict,
    load_defer_policy,
    parse_defer_policy,
    read_power_supply,
    window_minutes,
)


def supply(root: Path, name: str, **files: str) -> Path:
    """One power supply folder under ``root``, as /sys/class/power_supply/NAME lists it."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (folder / key).write_text(value + "\n")
    return folder


def laptop(root: Path, *, plugged: bool, percent: int) -> Path:
    supply(root, "AC", type="Mains", online="1" if plugged else "0")
    supply(
        root,
        "BAT0",
        type="Battery",
        capacity=str(percent),
        status="Charging" if plugged else "Discharging",
        scope="System",
    )
    return root


def at(hour: int, minute: int, tz: str = "UTC") -> float:
    return datetime(2026, 12, 5, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


# --- power supply ---------------------------------------------------------------------------


def test_a_device_that_lists_no_power_supply_is_on_mains_and_says_so(tmp_path: Path) -> None:
    verdict = Deferral(DeferPolicy(mains=True, power_supply=tmp_path / "empty")).check()
    assert verdict.allowed
    assert verdict.reason == (
        f"allowed: on mains power (no power supply listed under {tmp_path / 'empty'}: "
        "taken as mains)"
    )


def test_on_battery_below_the_level_waits_with_both_numbers(tmp_path: Path) -> None:
    root = laptop(tmp_path / "ps", plugged=False, percent=38)
    policy = DeferPolicy(min_battery_percent=40, power_supply=root)

    verdict = Deferral(policy).check()

    assert not verdict.allowed
    assert verdict.reason == "waiting: on battery (38 % < 40 %)"


def test_on_battery_above_the_level_runs_unless_mains_is_required(tmp_path: Path) -> None:
    root = laptop(tmp_path / "ps", plugged=False, percent=75)

    by_level = Deferral(DeferPolicy(min_battery_percent=40, power_supply=root)).check()
    by_mains = Deferral(DeferPolicy(mains=True, power_supply=root)).check()

    assert by_level.allowed and by_level.reason == "allowed: on battery (75 % >= 40 %)"
    assert not by_mains.allowed
    assert by_mains.reason == "waiting: on battery (75 %), and mains power is required"


def test_plugging_in_allows_what_waited(tmp_path: Path) -> None:
    root = laptop(tmp_path / "ps", plugged=False, percent=10)
    deferral = Deferral(DeferPolicy(mains=True, min_battery_percent=40, power_supply=root))
    assert not deferral.check().allowed

    laptop(root, plugged=True, percent=10)

    verdict = deferral.check()
    assert verdict.allowed and verdict.reason.startswith("allowed: on mains power (10 %)")


def test_a_peripherals_battery_and_a_battery_only_board(tmp_path: Path) -> None:
    # A mouse's battery says nothing about the machine; a board with only a full battery
    # (a UPS hat that reports no external supply) is not running from it.
    mouse = tmp_path / "mouse"
    supply(mouse, "hid-mouse", type="Battery", capacity="5", status="Discharging", scope="Device")
    hat = tmp_path / "hat"
    supply(hat, "battery", type="Battery", capacity="100", status="Full")

    assert read_power_supply(mouse).assumed == str(mouse)
    assert read_power_supply(hat).on_mains
    assert read_power_supply(hat).battery_percent == 100.0


# --- windows --------------------------------------------------------------------------------


def test_a_window_across_midnight_in_a_given_time_zone(tmp_path: Path) -> None:
    deferral = Deferral(DeferPolicy(windows=["22:00-06:00"], tz="Europe/Berlin"))

    night = deferral.check(at(23, 30, "Europe/Berlin"))
    morning = deferral.check(at(5, 59, "Europe/Berlin"))
    day = deferral.check(at(14, 3, "Europe/Berlin"))

    assert night.allowed and morning.allowed
    assert not day.allowed
    assert day.reason == "waiting: outside the window 22:00-06:00 (now 14:03 Europe/Berlin)"


@given(
    start=st.integers(0, 1439),
    end=st.integers(1, 1440),
    minute=st.integers(0, 1439),
)
def test_inside_a_window_is_between_its_ends_on_a_24_hour_circle(
    start: int, end: int, minute: int
) -> None:
    if start == end % 1440:
        return
    text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    deferral = Deferral(DeferPolicy(windows=[text], tz="UTC"))
    now = at(0, 0) + minute * 60
    # minutes since the window opened, going round the clock, fewer than its length
    inside = (minute - start) % 1440 < (end - start) % 1440
    assert deferral.check(now).allowed == inside
    assert window_minutes(text) == (start, end)


# --- carbon ---------------------------------------------------------------------------------


def test_a_carbon_file_above_the_threshold_waits_and_names_the_file_and_age(
    tmp_path: Path,
) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"g_per_kwh": 312, "at": 1_700_000_000}))
    policy = DeferPolicy(carbon={"file": grid, "max_g_per_kwh": 200})

    verdict = Deferral(policy).check(1_700_000_000 + 240)

    assert not verdict.allowed
    assert verdict.reason == f"waiting: carbon intensity 312 g/kWh > 200 (from {grid}, 4 min old)"


def test_a_plain_number_ages_from_the_files_time(tmp_path: Path) -> None:
    grid = tmp_path / "grid.txt"
    grid.write_text("180\n")
    os.utime(grid, (time.time() - 7200, time.time() - 7200))
    policy = DeferPolicy(carbon={"file": grid, "max_g_per_kwh": 200, "stale_after_s": 3600})

    stale = Deferral(policy).check()
    grid.write_text("180\n")  # written again: fresh
    fresh = Deferral(policy).check()

    assert not stale.allowed
    assert stale.reason == (
        f"waiting: the carbon intensity 180 g/kWh is stale (from {grid}, 2 h old; stale after 1 h)"
    )
    assert fresh.allowed and fresh.reason.startswith("allowed: carbon intensity 180 g/kWh <= 200")


@pytest.mark.parametrize("content", [None, "", "lots", '{"value": 1}', "-5"])
def test_a_missing_or_unreadable_carbon_value_waits_unless_told_to_run(
    tmp_path: Path, content: str | None
) -> None:
    grid = tmp_path / "grid.json"
    if content is not None:
        grid.write_text(content)
    rule = {"file": grid, "max_g_per_kwh": 200}

    waits = Deferral(DeferPolicy(carbon=rule)).check()
    runs = Deferral(DeferPolicy(carbon={**rule, "if_unknown": "run"})).check()

    assert not waits.allowed
    assert waits.reason.startswith(f"waiting: no carbon intensity: {grid}")
    assert runs.allowed and runs.reason.endswith("runs anyway (if_unknown: run)")


def test_a_topic_feed_holds_the_latest_reading() -> None:
    deferral = Deferral(DeferPolicy(carbon={"topic": "grid/carbon", "max_g_per_kwh": 200}))
    assert deferral.feed is not None
    assert deferral.check().reason == "waiting: no carbon intensity yet from mqtt topic grid/carbon"

    deferral.feed.offer(b'{"carbonIntensity": 150, "datetime": "2026-12-05T06:00:00Z"}')

    verdict = deferral.check(at(6, 30))
    assert verdict.allowed
    assert verdict.reason == (
        "allowed: carbon intensity 150 g/kWh <= 200 (from mqtt topic grid/carbon, 30 min old)"
    )


# --- combining, and the file ----------------------------------------------------------------


def test_all_conditions_must_hold_or_any_one_as_the_user_says(tmp_path: Path) -> None:
    root = laptop(tmp_path / "ps", plugged=False, percent=90)
    grid = tmp_path / "grid.txt"
    grid.write_text("120")
    rules = {"mains": True, "carbon": {"file": str(grid), "max_g_per_kwh": 200}}

    every = Deferral(DeferPolicy(**rules, power_supply=root)).check()
    either = Deferral(DeferPolicy(**rules, combine="any", power_supply=root)).check()

    assert not every.allowed
    assert every.reason == "waiting: on battery (90 %), and mains power is required"
    assert either.allowed and either.reason.startswith("allowed: carbon intensity 120 g/kWh")


def test_a_policy_file_is_checked_with_the_path_to_the_bad_key(tmp_path: Path) -> None:
    good = tmp_path / "defer.yaml"
    good.write_text("mains: true\ncarbon: {file: grid.json, max_g_per_kwh: 200}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("windows: ['22:00-6']\ncarbon: {file: g, topic: t, max_g_per_kwh: 0}\n")

    policy = load_defer_policy(good)
    with pytest.raises(ConfigError) as caught:
        load_defer_policy(bad)

    assert policy.carbon is not None and policy.carbon.file == tmp_path / "grid.json"
    message = str(caught.value)
    assert message.startswith(f"{bad}: 2 problems:")
    assert "windows.0: a window is HH:MM-HH:MM" in message
    assert "carbon.max_g_per_kwh: Input should be greater than 0, got 0" in message
    with pytest.raises(ConfigError, match=r"tz: no time zone named 'Mars/Olympus'"):
        parse_defer_policy({"windows": ["22:00-06:00"], "tz": "Mars/Olympus"}, origin="x")
    with pytest.raises(ConfigError, match=r"x: carbon: .*give `file`"):
        parse_defer_policy({"carbon": {"max_g_per_kwh": 1}}, origin="x")
    with pytest.raises(ConfigError, match=r"x: mians: unknown key 'mians'"):
        parse_defer_policy({"mians": True}, origin="x")


def test_a_feed_keeps_the_last_good_value_and_forgets_on_an_empty_payload() -> None:
    feed = CarbonFeed("mqtt topic t")
    feed.offer(b"90", received_at=10.0)
    feed.offer(b"{", received_at=20.0)
    kept = feed.latest()
    feed.offer(b"", received_at=30.0)

    assert kept is not None and (kept.g_per_kwh, kept.at) == (90.0, 10.0)
    assert feed.latest() is None


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` whole into ``path`` at once (a reader never sees it empty or half written)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_waiting_returns_once_allowed_and_tells_each_new_reason(tmp_path: Path) -> None:
    grid = tmp_path / "grid.txt"
    grid.write_text("400")
    deferral = Deferral(
        DeferPolicy(carbon={"file": grid, "max_g_per_kwh": 200}, check_every_s=0.05)
    )
    heard: list[str] = []
    clean = threading.Timer(0.3, replace_text, args=(grid, "100"))

    def told(verdict: Verdict) -> None:
        heard.append(verdict.reason)
        if len(heard) == 1:
            grid.write_text("401")  # the same reason with another number: not told again
            clean.start()  # and a moment later, a clean grid

    try:
        verdict = deferral.wait(say=told, timeout=30)
    finally:
        clean.cancel()

    assert verdict.allowed
    assert heard[0].startswith("waiting: carbon intensity 400 g/kWh > 200")
    assert heard[1].startswith("allowed: carbon intensity 100 g/kWh <= 200")
    assert len(heard) == 2


def test_a_wait_gives_up_at_its_timeout_with_the_reason(tmp_path: Path) -> None:
    opens = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)  # a window shut now
    window = f"{opens:%H:%M}-{opens + dt.timedelta(minutes=1):%H:%M}"
    deferral = Deferral(DeferPolicy(windows=[window], tz="UTC", check_every_s=0.05))

    verdict = deferral.wait(timeout=0.2)

    assert not verdict.allowed and verdict.reason.startswith("waiting: outside the window")


def test_the_next_window_opening_in_its_time_zone() -> None:
    deferral = Deferral(DeferPolicy(windows=["22:00-06:00", "12:30-13:00"], tz="Asia/Kolkata"))

    assert deferral.window_opens(at(23, 0, "Asia/Kolkata")) == at(23, 0, "Asia/Kolkata")
    assert deferral.window_opens(at(7, 0, "Asia/Kolkata")) == at(12, 30, "Asia/Kolkata")
    assert deferral.window_opens(at(13, 0, "Asia/Kolkata")) == at(22, 0, "Asia/Kolkata")
    assert Deferral(DeferPolicy(mains=True)).window_opens() is None
