"""Map sensor timestamps to host time despite radio jitter, clock drift and sensor resets.

Model: a frame whose last sample the sensor stamped ``sensor_ns`` arrives at host time
``host_s = offset + slope * sensor_s + delay`` with a link delay ``delay >= 0`` that is
usually small but has a long tail (connection events, retransmissions, OS scheduling).
An ordinary least-squares fit of arrivals would follow the mean delay and every outlier;
the fit here is of the LOWER ENVELOPE instead: among the lines lying on or below every
(sensor, arrival) pair of the window, the one with the least summed gap to the pairs (a
linear program whose solution is the edge of the lower convex hull above the window's mean
sensor time). It converges fast when some frames get through with near-minimal delay,
which over BLE most do. :meth:`ClockAligner.to_host` therefore returns the earliest
plausible arrival time of a sample: its host time plus the link's minimal latency, which
no receiver can observe.

The window slides (``window_s`` of sensor time, at most ``max_pairs`` pairs), so slow
drift changes (temperature) are followed. A sensor time reset (the Polar H10 restarts its
clock after a power cycle, see :mod:`firmware_bridge.polar_pmd`) shows as a sensor time
that goes backwards, runs ahead of the host, or falls behind it by more than any delivery
delay; the aligner then starts over and counts the reset. Within a connection a delivery
stall may hold frames back for many seconds (``lag_s``); the first pair after a
reconnection (:meth:`ClockAligner.new_link`) has no stall behind it, so there a sensor
clock that fell behind the host by more than ``relink_lag_s`` has restarted. That catches a
restart whose new clock lands near the old one: after an outage about as long as the
sensor had been counting, its time neither goes back nor lags by ``lag_s``. A restart that
moves the sensor clock by less than ``relink_lag_s`` against the host (the sensor had
counted less than that since it last started; an H10 restarts only after shutting down,
about a minute after it is detached) is indistinguishable from arrival jitter and goes
undetected.

Host times should come from a monotonic clock (``time.monotonic()``), never wall time.
"""

from __future__ import annotations

from collections import deque
from typing import overload

import numpy as np

from firmware_bridge.errors import ClockError

__all__ = ["ClockAligner"]

_BISECTION_STEPS = 48


class ClockAligner:
    """Sensor-time (ns) to host-time (s) mapping from frame arrival times.

    Parameters
    ----------
    window_s
        Sensor-time span of the sliding window, seconds.
    max_pairs
        Most pairs kept, oldest dropped first.
    min_span_s
        Window span below which the slope is fixed at 1 (drift 0), seconds.
    max_drift_ppm
        Bound of the drift search, parts per million (crystals: ±20..100 ppm).
    backward_s
        A sensor time going back by more than this (seconds) is a reset.
    forward_s
        A sensor time advancing more than the host time did, by over this (seconds),
        is a reset; arrival jitter must stay under it.
    lag_s
        A sensor time advancing less than the host time did, by over this (seconds),
        is a reset; delivery stalls must stay under it.
    relink_lag_s
        The same bound for the first pair after :meth:`new_link`: a new connection ends any
        stall, so only arrival jitter and drift over the outage must stay under it.
    """

    def __init__(
        self,
        *,
        window_s: float = 600.0,
        max_pairs: int = 4096,
        min_span_s: float = 60.0,
        max_drift_ppm: float = 1000.0,
        backward_s: float = 0.5,
        forward_s: float = 2.0,
        lag_s: float = 30.0,
        relink_lag_s: float = 2.0,
    ) -> None:
        if window_s <= 0 or max_pairs < 2 or min_span_s < 0 or max_drift_ppm <= 0:
            raise ValueError("window_s, max_drift_ppm > 0, max_pairs >= 2, min_span_s >= 0")
        if not 0 < relink_lag_s <= lag_s:
            raise ValueError("0 < relink_lag_s <= lag_s must hold")
        self.window_s = float(window_s)
        self.min_span_s = float(min_span_s)
        self.max_drift_ppm = float(max_drift_ppm)
        self.backward_s = float(backward_s)
        self.forward_s = float(forward_s)
        self.lag_s = float(lag_s)
        self.relink_lag_s = float(relink_lag_s)
        self._new_link = False  # the next pair is the first over a new connection
        self._sensor: deque[float] = deque(maxlen=max_pairs)
        self._host: deque[float] = deque(maxlen=max_pairs)
        self._ref_ns = 0
        self._ref_host = 0.0
        self._last: tuple[int, float] | None = None
        self._fit: tuple[float, float, float] | None = None  # center_s, level_s, slope
        self.resets = 0
        """Resets so far, detected or requested with :meth:`reset`."""
        self.last_reset_reason: str | None = None
        """``"backward"``, ``"forward"``, ``"lag"`` or ``"manual"``; ``None`` before any."""

    # ------------------------------------------------------------------ state
    @property
    def pairs(self) -> int:
        """Number of (sensor, host) pairs in the window."""
        return len(self._sensor)

    @property
    def span_s(self) -> float:
        """Sensor-time span of the window, seconds."""
        return self._sensor[-1] - self._sensor[0] if self._sensor else 0.0

    @property
    def ready(self) -> bool:
        """``True`` once the window spans ``min_span_s`` and the drift is estimated."""
        return self.pairs >= 2 and self.span_s >= self.min_span_s

    @property
    def slope(self) -> float:
        """d(host time) / d(sensor time); 1.0 until :attr:`ready`."""
        return self._solve()[2] if self._sensor else 1.0

    @property
    def drift_ppm(self) -> float:
        """How fast the sensor clock runs against the host's, ppm (positive = fast)."""
        return (1.0 / self.slope - 1.0) * 1e6

    def reset(self, reason: str = "manual") -> None:
        """Forget every pair (the sensor's clock restarted) and count the reset."""
        self._sensor.clear()
        self._host.clear()
        self._last = None
        self._fit = None
        self.resets += 1
        self.last_reset_reason = reason

    # ------------------------------------------------------------------ input
    def new_link(self) -> None:
        """The next pair is the first over a new connection: for it, a sensor time falling
        behind the host by more than ``relink_lag_s`` (not ``lag_s``) is a reset."""
        self._new_link = True

    def update(self, sensor_ns: int, host_arrival_s: float) -> bool:
        """Add the pair of one frame: its sensor timestamp and its host arrival time.

        Parameters
        ----------
        sensor_ns
            The frame's sensor timestamp, nanoseconds (any epoch).
        host_arrival_s
            Host monotonic time at which the frame arrived, seconds.

        Returns
        -------
        bool
            ``True`` when this pair revealed a sensor time reset; the window then
            restarts from this pair.
        """
        sensor_ns = int(sensor_ns)
        host = float(host_arrival_s)
        reason = self._reset_reason(sensor_ns, host)
        if reason is not None:
            self.reset(reason)
        self._new_link = False
        if not self._sensor:
            self._ref_ns, self._ref_host = sensor_ns, host
        self._last = (sensor_ns, host)
        s = (sensor_ns - self._ref_ns) / 1e9
        self._sensor.append(s)
        self._host.append(host - self._ref_host)
        while self._sensor[-1] - self._sensor[0] > self.window_s:
            self._sensor.popleft()
            self._host.popleft()
        self._fit = None
        return reason is not None

    def plausible(self, sensor_ns: int, host_arrival_s: float, early_s: float = 0.25) -> bool:
        """Whether a frame stamped ``sensor_ns`` arriving at ``host_arrival_s`` fits the
        current mapping: it implies no clock reset (see the class parameters) and arrives no
        more than ``early_s`` seconds before its sample was taken (:meth:`to_host`, the
        earliest plausible arrival; ``early_s`` absorbs the fit's error). ``True`` before the
        first pair. Nothing is recorded."""
        if not self._sensor:
            return True
        sensor_ns, host = int(sensor_ns), float(host_arrival_s)
        if self._reset_reason(sensor_ns, host) is not None:
            return False
        return host - float(self.to_host(sensor_ns)) >= -early_s

    def _reset_reason(self, sensor_ns: int, host: float) -> str | None:
        """``"backward"``, ``"forward"`` or ``"lag"`` when this pair reveals a sensor time
        reset against the last pair, else ``None``."""
        if self._last is None:
            return None
        d_sensor = (sensor_ns - self._last[0]) / 1e9
        d_host = host - self._last[1]
        if d_sensor < -self.backward_s:
            return "backward"
        if d_sensor - d_host > self.forward_s:
            return "forward"
        if d_host - d_sensor > (self.relink_lag_s if self._new_link else self.lag_s):
            return "lag"
        return None

    # ------------------------------------------------------------------ output
    @overload
    def to_host(self, sensor_ns: int) -> float: ...

    @overload
    def to_host(self, sensor_ns: np.ndarray) -> np.ndarray: ...

    def to_host(self, sensor_ns: int | np.ndarray) -> float | np.ndarray:
        """Host time (s, the clock of ``host_arrival_s``) of sensor time(s) ``sensor_ns``.

        Raises
        ------
        ClockError
            No pair has been observed since construction or the last reset.
        """
        if not self._sensor:
            raise ClockError("no (sensor, host) pair observed yet", pairs=0)
        center, level, slope = self._solve()
        if isinstance(sensor_ns, np.ndarray):
            rel = (sensor_ns.astype(np.int64) - np.int64(self._ref_ns)) / 1e9
            return self._ref_host + level + slope * (rel - center)
        rel_s = (int(sensor_ns) - self._ref_ns) / 1e9
        return self._ref_host + level + slope * (rel_s - center)

    def _solve(self) -> tuple[float, float, float]:
        if self._fit is None:
            s = np.fromiter(self._sensor, np.float64, len(self._sensor))
            h = np.fromiter(self._host, np.float64, len(self._host))
            center = float(s.mean())
            x = s - center
            slope = 1.0
            if self.ready:
                lo = 1.0 - self.max_drift_ppm * 1e-6
                hi = 1.0 + self.max_drift_ppm * 1e-6
                # f(b) = min_i(h_i - b x_i) is concave; -x at its argmin is a supergradient.
                for _ in range(_BISECTION_STEPS):
                    mid = 0.5 * (lo + hi)
                    j = int(np.argmin(h - mid * x))
                    if x[j] > 0:
                        hi = mid
                    elif x[j] < 0:
                        lo = mid
                    else:
                        lo = hi = mid
                        break
                slope = 0.5 * (lo + hi)
            level = float(np.min(h - slope * x))
            self._fit = (center, level, slope)
        return self._fit
