/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file builtin_fp16.h
 * \brief Conversions between IEEE-754 binary formats of different widths, as bit patterns.
 *
 * The runtime calls them with explicit template arguments, e.g.
 *   __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f)   float  -> half bits
 *   __truncXfYf2__<double, uint64_t, 52, uint16_t, uint16_t, 10>(d)  double -> half bits
 *   __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(h)  half bits -> float
 * where each format is (value type, same-width unsigned integer, explicit mantissa bits); the
 * exponent width is whatever remains after the sign bit. Narrowing rounds to nearest, ties to
 * even; overflow gives infinity; NaNs stay (quiet) NaNs.
 */
#ifndef BUILTIN_FP16_H_
#define BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace builtin_fp16_detail {

/*! \brief Field layout of one binary floating-point format stored in the integer type Rep. */
template <typename Rep, int kSigBits>
struct Layout {
  static constexpr int kBits = static_cast<int>(sizeof(Rep) * 8);
  static constexpr int kExpBits = kBits - kSigBits - 1;
  static constexpr Rep kSigMask = (Rep(1) << kSigBits) - 1;
  static constexpr Rep kExpMax = (Rep(1) << kExpBits) - 1;  // all-ones exponent: inf / NaN
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
};

template <typename To, typename From>
inline To BitCopy(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit copy between types of different size");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

}  // namespace builtin_fp16_detail

/*! \brief Narrow a wider format to a narrower one (e.g. float -> half). */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
inline DST_T __truncXfYf2__(SRC_T a) {
  using Src = builtin_fp16_detail::Layout<SRC_REP_T, SRC_SIG_BITS>;
  using Dst = builtin_fp16_detail::Layout<DST_REP_T, DST_SIG_BITS>;
  static_assert(SRC_SIG_BITS > DST_SIG_BITS && Src::kExpBits >= Dst::kExpBits,
                "__truncXfYf2__ only narrows");
  constexpr int kDrop = SRC_SIG_BITS - DST_SIG_BITS;  // mantissa bits that must be rounded away

  const SRC_REP_T bits = builtin_fp16_detail::BitCopy<SRC_REP_T>(a);
  const DST_REP_T sign = static_cast<DST_REP_T>(bits >> (Src::kBits - 1)) << (Dst::kBits - 1);
  const SRC_REP_T exp = (bits >> SRC_SIG_BITS) & Src::kExpMax;
  const SRC_REP_T sig = bits & Src::kSigMask;

  DST_REP_T out;
  if (exp == Src::kExpMax) {
    // Infinity keeps a zero mantissa; a NaN keeps its top payload bits and is forced quiet, which
    // also guarantees the truncated mantissa is non-zero.
    DST_REP_T payload = 0;
    if (sig != 0) {
      payload = static_cast<DST_REP_T>(sig >> kDrop) | (DST_REP_T(1) << (DST_SIG_BITS - 1));
    }
    out = static_cast<DST_REP_T>((Dst::kExpMax << DST_SIG_BITS) | payload);
  } else {
    // value = mant * 2^(e - SRC_SIG_BITS), with the implicit leading one for normal numbers.
    const SRC_REP_T mant = exp == 0 ? sig : (sig | (SRC_REP_T(1) << SRC_SIG_BITS));
    const int e = (exp == 0 ? 1 : static_cast<int>(exp)) - Src::kBias;
    const int dst_exp = e + Dst::kBias;
    // Right shift that lines `mant` up with the destination mantissa; subnormal results need
    // extra shifting since their exponent field is pinned at 1 - bias.
    const int shift = dst_exp >= 1 ? kDrop : kDrop + (1 - dst_exp);
    const DST_REP_T inf = static_cast<DST_REP_T>(Dst::kExpMax << DST_SIG_BITS);
    if (dst_exp >= static_cast<int>(Dst::kExpMax)) {
      out = inf;  // too large even before rounding
    } else if (shift > Src::kBits - 1) {
      out = 0;  // below half the smallest subnormal: rounds to zero
    } else {
      // For a normal result, adding the shifted mantissa (implicit one included) to
      // (dst_exp - 1) in the exponent field yields the encoding; a rounding carry then bumps the
      // exponent, up to exactly infinity. A subnormal result has exponent field 0 and may carry
      // into the smallest normal number, which is also right.
      DST_REP_T r = static_cast<DST_REP_T>(mant >> shift);
      if (dst_exp >= 1) r = static_cast<DST_REP_T>(r + ((dst_exp - 1) << DST_SIG_BITS));
      const SRC_REP_T rest = mant & ((SRC_REP_T(1) << shift) - 1);
      const SRC_REP_T half = SRC_REP_T(1) << (shift - 1);
      if (rest > half || (rest == half && (r & 1))) ++r;
      out = r;
    }
  }
  return builtin_fp16_detail::BitCopy<DST_T>(static_cast<DST_REP_T>(out | sign));
}

/*! \brief Widen a narrower format to a wider one (e.g. half -> float); always exact. */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
inline DST_T __extendXfYf2__(SRC_T a) {
  using Src = builtin_fp16_detail::Layout<SRC_REP_T, SRC_SIG_BITS>;
  using Dst = builtin_fp16_detail::Layout<DST_REP_T, DST_SIG_BITS>;
  static_assert(DST_SIG_BITS > SRC_SIG_BITS && Dst::kExpBits >= Src::kExpBits,
                "__extendXfYf2__ only widens");
  constexpr int kGrow = DST_SIG_BITS - SRC_SIG_BITS;

  const SRC_REP_T bits = builtin_fp16_detail::BitCopy<SRC_REP_T>(a);
  const DST_REP_T sign = static_cast<DST_REP_T>(bits >> (Src::kBits - 1)) << (Dst::kBits - 1);
  const SRC_REP_T exp = (bits >> SRC_SIG_BITS) & Src::kExpMax;
  const SRC_REP_T sig = bits & Src::kSigMask;

  DST_REP_T out;
  if (exp == Src::kExpMax) {
    out = (Dst::kExpMax << DST_SIG_BITS) | (static_cast<DST_REP_T>(sig) << kGrow);  // inf / NaN
  } else if (exp != 0) {
    const DST_REP_T dst_exp = static_cast<DST_REP_T>(exp) - Src::kBias + Dst::kBias;
    out = (dst_exp << DST_SIG_BITS) | (static_cast<DST_REP_T>(sig) << kGrow);
  } else if (sig == 0) {
    out = 0;  // signed zero
  } else {
    // Subnormal source: normalise so the highest set bit becomes the implicit one.
    int top = SRC_SIG_BITS - 1;
    while (((sig >> top) & 1) == 0) --top;
    // value = sig * 2^(1 - bias - SRC_SIG_BITS) = 1.f * 2^(top + 1 - bias - SRC_SIG_BITS)
    const int e = top + 1 - Src::kBias - SRC_SIG_BITS;
    const DST_REP_T frac = (static_cast<DST_REP_T>(sig) << (DST_SIG_BITS - top)) & Dst::kSigMask;
    out = (static_cast<DST_REP_T>(e + Dst::kBias) << DST_SIG_BITS) | frac;
  }
  return builtin_fp16_detail::BitCopy<DST_T>(static_cast<DST_REP_T>(out | sign));
}

#endif  // BUILTIN_FP16_H_
