"""PyTorch's float32 resampling indices, reproduced exactly in portable integer arithmetic.

Legacy 'nearest' picks ``floor(float32(i * float32(in / out)))`` and bilinear
(``align_corners=False``) reads at ``float32((i + 0.5) * float32(in / out) - 0.5)``, rounded
once (PyTorch's AVX2/AVX-512 kernels fuse the multiply-add). Written with float ops, such
index arithmetic is only as exact as each consumer's float handling: a precision hint
(OpenVINO bf16, TensorRT fp16) may run it in 8 or 11 bits. Written with int64 products, it
overflowed on OpenVINO's CPU plugin, which executes int64 as int32 (the earlier fixed-point
form ``(2i + 1) * M``, ``M`` ~ 2**24, wrapped by 2**32). And that plugin divides integers in
float32 (measured: ``(2**25 + 3) // 2`` gives 16777218), exact only while the operands are.

So here, for any side below 2**15 (the exporter admits up to ``profiles.MAX_SIZE``):
sums and products stay below 2**26 and every Div/Mod operand below 2**23, where even a
float32 division truncates to the exact quotient. The ratio is long-divided into 8-bit
limbs; products of a limb and an index (< 2**15) stay below 2**23 and are normalised with
carries. Float32 rounding is emulated exactly: the value is kept as ``whole + frac *
2**-bits`` and rounded to the float32 step of its binade, ties to even.

Division only ever sees non-negative operands, where truncating (ONNX Div) and floor agree.
Where interval arithmetic cannot see a true bound (a quotient whose dividend and divisor grow
together), a ``minimum`` states it, so the export-time range check (``portability.py``)
proves the graph safe without relational reasoning; those clamps never change a value.
"""

from __future__ import annotations

import torch

_LIMB = 256  # the ratio's fraction is three 8-bit limbs: units of 2**-8, 2**-16, 2**-24
_POWER_OF_TWO_BELOW = torch.tensor([1 << max(k.bit_length() - 1, 0) for k in range(1 << 15)])
# float32's step, in units of 2**-24, for a ratio whose whole part is 0..7 (in [2**e,
# 2**(e+1)) it is 2**(e+1)).
_RATIO_STEP = torch.tensor([1, 2, 4, 4, 8, 8, 8, 8])


def _div(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """Quotient of non-negative integers (exported as ONNX Div)."""
    return torch.div(a, b, rounding_mode="trunc")


def _int(value: int | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.int64)


def highest_power_of_two(x: torch.Tensor) -> torch.Tensor:
    """The largest power of two not above ``x``, for ``1 <= x < 2**15`` (elementwise).

    A table lookup (one Gather; the exporter stores the 256 KB table once however often it
    is used): comparing against every power costs ~15 elementwise passes per call.
    """
    return _POWER_OF_TWO_BELOW[x]


def _carry(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``value`` (< 2**23) as (multiples of 256, remainder)."""
    return _div(value, _LIMB), torch.remainder(value, _LIMB)


def float32_ratio(num: int | torch.Tensor, den: int | torch.Tensor) -> list[torch.Tensor]:
    """``float32(num / den)`` as limbs ``[whole, l1, l2, l3]`` (value ``whole + l1 / 2**8 +
    l2 / 2**16 + l3 / 2**24``, limbs below 256), for ``num, den < 2**15`` and a ratio in
    [0.5, 8), where float32 steps are whole units of 2**-24.

    Long division, 8 bits a step, then rounding to the ratio's float32 step (2**(e+1) units
    for a ratio in [2**e, 2**(e+1))), the remainder deciding, ties to even.
    """
    num, den = _int(num), _int(den)
    whole = torch.minimum(_div(num, den), _int(7))  # the ratio is below 8
    rest = torch.remainder(num, den)
    limbs = [whole]
    for _ in range(3):
        rest = rest * _LIMB  # < 2**23
        limbs.append(torch.minimum(_div(rest, den), _int(_LIMB - 1)))  # rest < 256 * den
        rest = torch.remainder(rest, den)
    step = _RATIO_STEP[whole]
    rem = torch.remainder(limbs[3], step)  # step divides 256
    excess = 2 * (rem * den + rest) - step * den  # sign of (exact remainder - step / 2)
    odd = torch.remainder(_div(limbs[3], step), 2) == 1
    up = ((excess > 0) | ((excess == 0) & odd)).to(torch.int64)
    limbs[3] = limbs[3] - rem + up * step  # <= 256: carried below
    for k in (3, 2, 1):
        carry, limbs[k] = _carry(limbs[k])
        limbs[k - 1] = limbs[k - 1] + carry
    return limbs


def times_ratio(m: torch.Tensor, ratio: list[torch.Tensor], bits: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m * ratio * 2**(24 - bits)`` exactly, for ``0 <= m < 2**15`` and ``bits`` 24 or 25,
    as ``(whole, high, low)``: the value is ``whole + (high * 2**16 + low) * 2**-bits`` with
    ``low < 2**16`` and ``high * 2**16 + low < 2**bits``."""
    whole, *limbs = ratio
    carry = _int(0)
    digits = []
    for limb in reversed(limbs):  # 2**-24 first; each product < 2**23 - 2**15
        carry, digit = _carry(m * limb + carry)
        digits.append(digit)
    whole = m * whole + carry  # < 2**18
    low = digits[1] * _LIMB + digits[0]
    high = digits[2]
    if bits == 25:  # halve: the whole part's last bit becomes the fraction's top bit
        high = high + torch.remainder(whole, 2) * _LIMB
        whole = _div(whole, 2)
    return whole, high, low


def round_to_float32(whole: torch.Tensor, high: torch.Tensor, low: torch.Tensor, bits: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``whole + (high * 2**16 + low) * 2**-bits`` (``whole < 2**15``, ``bits`` 24 or 25)
    rounded to the nearest float32, ties to even, as ``(whole, frac)`` with ``frac`` in units
    of 2**-bits."""
    one = 1 << bits
    # A float32 in [2**k, 2**(k+1)) is a multiple of 2**(k-23): for whole >= 1 that is
    # highest_power_of_two(whole) * 2**(bits-23) units (at most 2**16, so it divides 2**16);
    # below 1 it is one unit or finer, except with 25 bits in [0.5, 1), where it is two.
    above_one = highest_power_of_two(whole) * (1 << (bits - 23))
    below_one = torch.where(high >= (one >> 17), _int(1 << (bits - 24)), _int(1))
    step = torch.where(whole >= 1, above_one, below_one)
    rem = torch.remainder(low, step)
    # The bit above the step decides ties (mantissa parity).
    odd = torch.remainder(_div(torch.remainder(high, 2) * 65536 + low, step), 2) == 1
    up = ((2 * rem > step) | ((2 * rem == step) & odd)).to(torch.int64)
    frac = high * 65536 + low - rem + up * step  # <= 2**bits
    carry = (frac >= one).to(torch.int64)
    return whole + carry, frac - carry * one


def nearest_source(in_size: int | torch.Tensor, out_size: int | torch.Tensor,
                   index: torch.Tensor) -> torch.Tensor:
    """Source pixel of output ``index`` in PyTorch's legacy 'nearest' from ``in_size`` to
    ``out_size``: ``min(floor(float32(index * float32(in / out))), in - 1)`` (elementwise).

    Only the whole part matters: float32 rounding raises it by one when the fraction is
    within half a step of the next integer, half a step being highest_power_of_two(whole)
    units of 2**-24 (ties go up: the integer has the even mantissa). Below 1 the step is
    finer than the exact value's units, so nothing is raised.
    """
    whole, high, low = times_ratio(index, float32_ratio(in_size, out_size), 24)
    half_step = highest_power_of_two(whole)
    raised = (whole >= 1) & (high * 65536 + low >= (1 << 24) - half_step)
    return torch.minimum(whole + raised.to(torch.int64), _int(in_size) - 1)


def linear_source(in_size: int | torch.Tensor, out_size: int | torch.Tensor,
                  index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where output ``index`` of PyTorch's bilinear (``align_corners=False``) from ``in_size``
    to ``out_size`` (at most 2x larger) reads, as ``(whole, frac)`` in units of 2**-25:
    ``max(float32((index + 0.5) * float32(in / out) - 0.5), 0)``, rounded once (elementwise).
    """
    ratio = float32_ratio(in_size, out_size)
    whole, high, low = times_ratio(2 * index + 1, ratio, 25)
    # Subtract 1/2 (high 256): borrow one from whole when the fraction is below it.
    borrow = (high < _LIMB).to(torch.int64)
    whole = whole - borrow
    high = high + borrow * 2 * _LIMB - _LIMB
    negative = whole < 0  # only before the first source pixel: the read clamps to 0
    return round_to_float32(torch.maximum(whole, _int(0)), torch.where(negative, 0, high),
                            torch.where(negative, 0, low), 25)


def nearest_picks(in_size: int | torch.Tensor, out_size: int | torch.Tensor) -> torch.Tensor:
    """Source index of each output pixel of PyTorch's legacy 'nearest' from ``in_size`` to
    ``out_size``."""
    return nearest_source(in_size, out_size, torch.arange(out_size))


def linear_taps(in_size: int | torch.Tensor, out_size: int | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of PyTorch's bilinear (``align_corners=False``) enlarging
    ``in_size`` to ``out_size`` (at most 2x), bit for bit.

    The read position's whole part is the first index and its fraction the second weight, a
    float32 that one cast and one power-of-two scaling produce exactly (it has at most 24
    significant bits). The first weight is ``1 - second`` in float32, as PyTorch computes it.
    """
    last = _int(in_size) - 1
    whole, frac = linear_source(in_size, out_size, torch.arange(out_size))
    first = torch.minimum(whole, last)  # whole <= in - 1 already: the read is below in - 3/4
    second = torch.minimum(first + 1, last)
    weight = frac.to(torch.float32) * 2.0**-25
    return first, second, 1.0 - weight, weight
