"""The benchmarks' own pieces that a wrong number would hide (the runs themselves: `make bench*`)."""

from __future__ import annotations

from benchmarks.grpc_load import grpc_frame, percentile


def test_grpc_frame_prefixes_a_zero_and_the_length_big_endian() -> None:
    # 300 bytes: a length over 255 tells big from little endian.
    assert grpc_frame(b"x" * 300) == b"\x00\x00\x00\x01\x2c" + b"x" * 300


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([7.0], 0.99) == 7.0
