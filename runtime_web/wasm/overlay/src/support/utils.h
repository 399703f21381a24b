/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file src/support/utils.h
 * \brief Small string, hashing and environment helpers used across the runtime.
 */
#ifndef TVM_SUPPORT_UTILS_H_
#define TVM_SUPPORT_UTILS_H_

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdlib>
#include <sstream>
#include <string>
#include <type_traits>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& value, const std::string& prefix) {
  return value.size() >= prefix.size() && value.compare(0, prefix.size(), prefix) == 0;
}

inline bool EndsWith(const std::string& value, const std::string& suffix) {
  return value.size() >= suffix.size() &&
         value.compare(value.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/*! \brief True for a non-empty run of decimal digits (a CPU id, a count). */
inline bool IsNumber(const std::string& str) {
  return !str.empty() &&
         std::all_of(str.begin(), str.end(), [](unsigned char c) { return std::isdigit(c); });
}

/*! \brief Mix `value` into the running hash `seed` in place; also returns the new seed. */
inline size_t HashCombine(size_t& seed, size_t value) {  // NOLINT(runtime/references)
  // Golden-ratio constant plus shifts spread the bits of both inputs (boost-style mixing).
  seed ^= value + size_t(0x9e3779b97f4a7c15ULL) + (seed << 6) + (seed >> 2);
  return seed;
}

/*!
 * \brief Read environment variable `key` as a T, or `default_value` when it is unset or does
 * not parse. Booleans accept 0/1 and true/false.
 */
template <typename T>
inline T GetEnv(const char* key, T default_value) {
  const char* raw = std::getenv(key);
  if (raw == nullptr || raw[0] == '\0') return default_value;
  std::string text(raw);
  if constexpr (std::is_same_v<T, std::string>) {
    return text;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    std::istringstream is(text);
    long long number;  // NOLINT(runtime/int)
    return (is >> number) ? number != 0 : default_value;
  } else {
    std::istringstream is(text);
    T value;
    return (is >> value) ? value : default_value;
  }
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_UTILS_H_
