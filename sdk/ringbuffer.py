"""Preallocated multi-lead ring buffer for streaming ECG samples.

The buffer stores, for every sample, the lead values (float32, millivolts by
convention), an acquisition timestamp (float64, seconds) and a uint8 flag byte:

* bit 0, :data:`GAP_BEFORE` -- a gap in acquisition time precedes this sample;
* bit 1, :data:`INVALID` -- at least one lead of this sample was non-finite (NaN or
  +/-inf, also after the cast to float32) and the offending values were stored as 0.0.

Samples are addressed by an absolute index: the value of :attr:`RingBuffer.total_written`
when the sample was written. Writes and reads touch at most two contiguous slices of the
storage arrays, so wraparound never costs a per-sample loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sdk.errors import BlockError, BufferOverflowError, ConfigError

__all__ = ["GAP_BEFORE", "INVALID", "OverflowPolicy", "RingBuffer"]

GAP_BEFORE: int = 0b01
"""Flag bit: a gap in acquisition time precedes this sample."""

INVALID: int = 0b10
"""Flag bit: the sample held non-finite values, which were stored as 0.0."""

OverflowPolicy = Literal["overwrite", "raise"]

_POLICIES: tuple[str, ...] = ("overwrite", "raise")


class RingBuffer:
    """Fixed-capacity ring buffer of multi-lead samples with timestamps and flags.

    Parameters
    ----------
    capacity : int
        Number of samples held, >= 1. All storage is allocated here.
    n_leads : int
        Number of leads (columns) per sample, >= 1.
    overflow : {"overwrite", "raise"}, default "overwrite"
        What :meth:`write` does when the block does not fit.
        ``"overwrite"`` drops the oldest samples (counted in :attr:`overwritten`) and never
        raises. ``"raise"`` raises :class:`~sdk.errors.BufferOverflowError` -- writing
        nothing -- when the write would overwrite samples not yet released with
        :meth:`release`.

    Notes
    -----
    Storage: ``float32 (capacity, n_leads)`` values, ``float64 (capacity,)`` timestamps in
    seconds and ``uint8 (capacity,)`` flags (see :data:`GAP_BEFORE`, :data:`INVALID`).
    """

    def __init__(
        self, capacity: int, n_leads: int, *, overflow: OverflowPolicy = "overwrite"
    ) -> None:
        if int(capacity) != capacity or capacity < 1:
            raise ConfigError(
                f"capacity must be an integer >= 1, got {capacity!r}", field="capacity"
            )
        if int(n_leads) != n_leads or n_leads < 1:
            raise ConfigError(f"n_leads must be an integer >= 1, got {n_leads!r}", field="n_leads")
        if overflow not in _POLICIES:
            raise ConfigError(
                f"overflow must be one of {_POLICIES}, got {overflow!r}", field="overflow"
            )
        self._capacity = int(capacity)
        self._n_leads = int(n_leads)
        self._overflow: OverflowPolicy = overflow
        self._data = np.zeros((self._capacity, self._n_leads), dtype=np.float32)
        self._times = np.zeros(self._capacity, dtype=np.float64)
        self._flags = np.zeros(self._capacity, dtype=np.uint8)
        self._total = 0
        self._released = 0
        self._overwritten = 0
        self._last_time = -np.inf
        self._pending_gap = False

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        """Maximum number of samples held."""
        return self._capacity

    @property
    def n_leads(self) -> int:
        """Number of leads per sample."""
        return self._n_leads

    @property
    def overflow(self) -> OverflowPolicy:
        """The overflow policy, ``"overwrite"`` or ``"raise"``."""
        return self._overflow

    @property
    def total_written(self) -> int:
        """Samples written since creation (monotonic); the next sample's absolute index."""
        return self._total

    @property
    def size(self) -> int:
        """Samples currently held, ``min(total_written, capacity)``."""
        return min(self._total, self._capacity)

    @property
    def oldest_index(self) -> int:
        """Absolute index of the oldest sample still held."""
        return self._total - self.size

    @property
    def overwritten(self) -> int:
        """Samples dropped by the ``"overwrite"`` policy (including never-stored heads)."""
        return self._overwritten

    @property
    def released(self) -> int:
        """Absolute index below which samples are released (see :meth:`release`)."""
        return self._released

    @property
    def pending(self) -> int:
        """Samples written but not yet released."""
        return self._total - self._released

    @property
    def last_timestamp(self) -> float:
        """Timestamp of the newest sample in seconds, ``-inf`` before the first write."""
        return float(self._last_time)

    # ------------------------------------------------------------------ writing
    def write(
        self, samples: np.ndarray, timestamps: np.ndarray, *, gap_before: bool = False
    ) -> int:
        """Append a block of samples.

        Parameters
        ----------
        samples : numpy.ndarray
            ``(n, n_leads)`` array of any real dtype (cast to float32), or ``(n,)`` when
            ``n_leads == 1``. Non-finite values are stored as 0.0 and the sample is flagged
            :data:`INVALID`.
        timestamps : numpy.ndarray
            ``(n,)`` acquisition times in seconds (cast to float64); strictly increasing
            and strictly after :attr:`last_timestamp`.
        gap_before : bool, default False
            Mark the first sample of the block with :data:`GAP_BEFORE`. For an empty block
            the mark carries over to the first sample of the next non-empty write.

        Returns
        -------
        int
            Number of samples written, ``n``. The block is either written whole or not at
            all.

        Raises
        ------
        BlockError
            ``reason="lead_count"`` or ``"shape"`` for a malformed block,
            ``"timestamp_shape"`` if ``timestamps`` does not match, ``"nonfinite_timestamps"``
            or ``"non_monotonic_timestamps"``.
        BufferOverflowError
            With ``overflow="raise"``, if ``pending + n > capacity``.
        """
        block = self._as_block(samples)
        times = self._check_times(timestamps, block.shape[0])
        n = block.shape[0]
        if n == 0:
            self._pending_gap = self._pending_gap or gap_before
            return 0
        if self._overflow == "raise" and self.pending + n > self._capacity:
            raise BufferOverflowError(
                f"block of {n} samples does not fit: {self.pending} unreleased samples "
                f"+ {n} > capacity {self._capacity}; call release() first",
                capacity=self._capacity,
                pending=self.pending,
            )
        self._overwritten += max(0, self.size + n - self._capacity)
        first_flag = GAP_BEFORE if (gap_before or self._pending_gap) else 0
        keep = min(n, self._capacity)
        start_abs = self._total + n - keep
        self._store(start_abs, block[n - keep :], times[n - keep :], first_flag if keep == n else 0)
        self._total += n
        self._last_time = times[-1]
        self._pending_gap = False
        return n

    def _as_block(self, samples: np.ndarray) -> np.ndarray:
        block = np.asarray(samples)
        if block.ndim == 1:
            if self._n_leads != 1:
                raise BlockError(
                    f"1-D block given but the buffer has {self._n_leads} leads; "
                    "pass shape (n, n_leads)",
                    reason="lead_count",
                )
            block = block.reshape(-1, 1)
        elif block.ndim != 2:
            raise BlockError(f"block must be (n, n_leads), got shape {block.shape}", reason="shape")
        if block.shape[1] != self._n_leads:
            raise BlockError(
                f"block has {block.shape[1]} leads but the buffer has {self._n_leads}",
                reason="lead_count",
            )
        if not (np.issubdtype(block.dtype, np.number) or block.dtype == np.bool_):
            raise BlockError(f"block dtype {block.dtype} is not numeric", reason="dtype")
        if np.iscomplexobj(block):
            raise BlockError("block must be real-valued", reason="dtype")
        return block

    def _check_times(self, timestamps: np.ndarray, n: int) -> np.ndarray:
        times = np.asarray(timestamps, dtype=np.float64)
        if times.shape != (n,):
            raise BlockError(
                f"timestamps shape {times.shape} does not match the block's ({n},)",
                reason="timestamp_shape",
            )
        if n == 0:
            return times
        if not np.all(np.isfinite(times)):
            raise BlockError("timestamps must be finite", reason="nonfinite_timestamps")
        if times[0] <= self._last_time or np.any(np.diff(times) <= 0.0):
            raise BlockError(
                "timestamps must be strictly increasing within the block and after the last "
                f"written timestamp {self._last_time!r} s (block starts at {times[0]!r} s)",
                reason="non_monotonic_timestamps",
            )
        return times

    def _store(self, start_abs: int, block: np.ndarray, times: np.ndarray, first_flag: int) -> None:
        """Copy ``block`` (``len <= capacity``) to absolute indices from ``start_abs``."""
        n = block.shape[0]
        pos = start_abs % self._capacity
        first = min(n, self._capacity - pos)
        for dst, src in (
            (slice(pos, pos + first), slice(0, first)),
            (slice(0, n - first), slice(first, n)),
        ):
            if src.start == src.stop:
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                self._data[dst] = block[src]
            self._times[dst] = times[src]
            view = self._data[dst]
            bad = ~np.isfinite(view)
            if bad.any():
                view[bad] = 0.0
                self._flags[dst] = np.where(bad.any(axis=1), INVALID, 0)
            else:
                self._flags[dst] = 0
        if first_flag:
            self._flags[pos] |= np.uint8(first_flag)

    # ------------------------------------------------------------------ reading
    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return copies of the newest ``n`` samples in chronological order.

        Parameters
        ----------
        n : int
            Number of samples, ``0 <= n <= size``.

        Returns
        -------
        samples : numpy.ndarray
            float32 ``(n, n_leads)``.
        times : numpy.ndarray
            float64 ``(n,)`` seconds.
        flags : numpy.ndarray
            uint8 ``(n,)``.

        Raises
        ------
        ConfigError
            If ``n`` is negative or larger than :attr:`size`.
        """
        if n < 0 or n > self.size:
            raise ConfigError(f"latest(n) needs 0 <= n <= size ({self.size}), got {n}", field="n")
        return self.read_range(self._total - n, n)

    def read_range(self, start_index: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return copies of the samples with absolute indices ``[start_index, start_index + n)``.

        Parameters
        ----------
        start_index : int
            Absolute index of the first sample (counted by :attr:`total_written`).
        n : int
            Number of samples, >= 0.

        Returns
        -------
        tuple of numpy.ndarray
            ``(samples float32 (n, n_leads), times float64 (n,) s, flags uint8 (n,))``.

        Raises
        ------
        BlockError
            ``reason="overwritten"`` if ``start_index < oldest_index``.
        ConfigError
            If ``n < 0``, ``start_index < 0`` or the range reaches past
            :attr:`total_written`.
        """
        if n < 0 or start_index < 0:
            raise ConfigError(
                f"start_index and n must be >= 0, got start_index={start_index}, n={n}",
                field="n" if n < 0 else "start_index",
            )
        if start_index + n > self._total:
            raise ConfigError(
                f"range [{start_index}, {start_index + n}) reaches past total_written "
                f"({self._total})",
                field="n",
            )
        if start_index < self.oldest_index:
            raise BlockError(
                f"samples from {start_index} were overwritten; oldest held is {self.oldest_index}",
                reason="overwritten",
            )
        out = np.empty((n, self._n_leads), dtype=np.float32)
        times = np.empty(n, dtype=np.float64)
        flags = np.empty(n, dtype=np.uint8)
        pos = start_index % self._capacity
        first = min(n, self._capacity - pos)
        for dst_arr, src_arr in ((out, self._data), (times, self._times), (flags, self._flags)):
            dst_arr[:first] = src_arr[pos : pos + first]
            dst_arr[first:] = src_arr[: n - first]
        return out, times, flags

    def release(self, upto_index: int) -> None:
        """Release samples with absolute index ``< upto_index`` for overwriting.

        Only the ``"raise"`` policy looks at releases; releasing is always allowed.

        Parameters
        ----------
        upto_index : int
            ``released <= upto_index <= total_written``.

        Raises
        ------
        ConfigError
            If ``upto_index`` moves backwards or past :attr:`total_written`.
        """
        if upto_index < self._released or upto_index > self._total:
            raise ConfigError(
                f"release index must satisfy released ({self._released}) <= upto_index "
                f"<= total_written ({self._total}), got {upto_index}",
                field="upto_index",
            )
        self._released = int(upto_index)
