"""Generate a synthetic accelerometer recording of a pump with a developing bearing fault.

Run with ``python examples/vibration/make_data.py`` (numpy only). It writes
``vibration.csv`` beside this script: columns ``t`` (seconds), ``ax``, ``ay``,
``az`` (acceleration in g, 1 mg resolution) and ``state`` (``normal`` or
``fault``), sampled at 1 kHz.

What the signal holds, and why:

* a shaft turning at about 27 Hz whose speed drifts slowly (a real motor
  under varying load is never exactly on its nameplate speed), with the 1x
  (imbalance), 2x (misalignment) and 3x harmonics, different on each axis;
* a vane-pass tone at 7x shaft speed (a 7-vane impeller), weaker;
* gravity on ``az`` and broadband sensor noise;
* from ``fault_at`` on, an outer-race bearing defect: each time a rolling
  element passes the defect (3.6x shaft speed, the ball-pass frequency) it
  strikes and rings the housing's resonance near 380 Hz. The strikes grow
  with the fault's severity (which ramps from ``onset`` to 1), together with
  broadband noise from the damaged race and a little extra 1x from the
  looser fit.

The committed CSV is 20 s (12 s normal, 8 s developing fault); this script
is the source of truth and ``generate`` can make any length, which is what
``train.py`` does to get more normal data than the committed demo holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SAMPLE_RATE = 1000.0  # Hz
SHAFT_HZ = 27.0
BALL_PASS = 3.6  # outer-race ball-pass frequency, in shaft orders
RESONANCE_HZ = 380.0
OUT = Path(__file__).resolve().parent / "vibration.csv"

# Per-axis amplitudes (g) of the shaft orders 1x, 2x, 3x and the 7x vane pass.
ORDERS = (1, 2, 3, 7)
AMPLITUDE = np.array(
    [
        [0.30, 0.12, 0.05, 0.04],  # ax: radial, in the imbalance direction
        [0.22, 0.15, 0.04, 0.03],  # ay: radial
        [0.08, 0.05, 0.02, 0.05],  # az: axial
    ]
)


def generate(
    duration: float = 20.0,
    fault_at: float | None = 12.0,
    *,
    onset: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``t`` (n,), ``accel`` (n, 3) in g and ``fault`` (n,) bool.

    ``fault_at=None`` gives a healthy machine throughout. The fault's
    severity ramps linearly from ``onset`` at ``fault_at`` to 1 at the end.
    """
    rng = np.random.default_rng(seed)
    n = round(duration * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE

    # Shaft speed: slow random drift of a few percent, and an instantaneous phase from it.
    knots = np.linspace(0.0, duration, max(2, int(duration / 2.0) + 1))
    drift = np.interp(t, knots, rng.normal(0.0, 0.015, knots.size))
    speed = SHAFT_HZ * (1.0 + drift)
    phase = 2 * np.pi * np.cumsum(speed) / SAMPLE_RATE
    # Load varies too, and with it the vibration amplitude.
    load = 1.0 + np.interp(t, knots, rng.normal(0.0, 0.08, knots.size))

    accel = np.empty((n, 3))
    for axis in range(3):
        offsets = rng.uniform(0, 2 * np.pi, len(ORDERS))
        signal = sum(
            AMPLITUDE[axis, k] * np.sin(order * phase + offsets[k])
            for k, order in enumerate(ORDERS)
        )
        accel[:, axis] = load * signal + rng.normal(0.0, 0.03, n)
    accel[:, 2] += 1.0  # gravity

    fault = np.zeros(n, dtype=bool)
    if fault_at is not None and fault_at < duration:
        start = round(fault_at * SAMPLE_RATE)
        fault[start:] = True
        severity = np.zeros(n)
        severity[start:] = np.linspace(onset, 1.0, n - start)
        accel += _bearing_fault(phase, severity, rng)
    return t, accel, fault


def _bearing_fault(phase: np.ndarray, severity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Impacts at the ball-pass rate ringing the housing resonance, scaled by ``severity``."""
    n = phase.size
    # An impact each time the ball-pass phase wraps, with some jitter in strength (slip, load zone).
    passes = np.floor(BALL_PASS * phase / (2 * np.pi))
    hits = np.flatnonzero(np.diff(passes) > 0) + 1
    impulses = np.zeros(n)
    impulses[hits] = severity[hits] * rng.uniform(0.6, 1.4, hits.size)
    # Each impact rings a damped 380 Hz resonance for ~15 ms.
    tk = np.arange(int(0.015 * SAMPLE_RATE)) / SAMPLE_RATE
    ring = np.exp(-tk / 0.004) * np.sin(2 * np.pi * RESONANCE_HZ * tk)
    ringing = np.convolve(impulses, ring)[:n]
    out = np.empty((n, 3))
    gains = (0.8, 0.6, 0.25)  # the defect sits in the radial load zone
    shaft = np.sin(phase)
    for axis, gain in enumerate(gains):
        out[:, axis] = gain * ringing
        out[:, axis] += severity * rng.normal(0.0, 0.03, n)  # rough race: broadband noise
        out[:, axis] += 0.06 * gain * severity * shaft  # looser fit: a little more 1x
    return out


def write_csv(path: Path, t: np.ndarray, accel: np.ndarray, fault: np.ndarray) -> None:
    state = np.where(fault, "fault", "normal")
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write("t,ax,ay,az,state\n")
        for row in zip(t, accel[:, 0], accel[:, 1], accel[:, 2], state, strict=True):
            fh.write(f"{row[0]:.3f},{row[1]:.3f},{row[2]:.3f},{row[3]:.3f},{row[4]}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--fault-at", type=float, default=12.0, help="fault onset, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t, accel, fault = generate(args.duration, args.fault_at, seed=args.seed)
    write_csv(args.out, t, accel, fault)
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): {t.size} rows at "
        f"{SAMPLE_RATE:.0f} Hz, {int((~fault).sum())} normal, {int(fault.sum())} fault "
        f"(from {args.fault_at:g} s), seed {args.seed}"
    )


if __name__ == "__main__":
    main()
