/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file tvm/support/serializer.h
 * \brief The binary format of typed values on a support::Stream.
 *
 * This is a contract with the compiler in the wheel (libtvm writes executables, tensors and device
 * modules with its own copy of these rules), so the rules are exactly:
 *   - arithmetic values and enums: their bytes, little-endian, at their native width;
 *   - DLDataType: code (u8), bits (u8), lanes (u16); DLDevice: device_type (i32), device_id (i32);
 *   - strings and bytes (std::string, ffi::String, ffi::Bytes): u64 length, then the bytes;
 *   - sequences (std::vector, ffi::Array): u64 count, then each element;
 *   - maps (std::map, std::unordered_map, ffi::Map): u64 count, then key, value, key, value...;
 *   - std::pair: first, then second.
 * Arrays written with Stream::WriteArray carry no count: the reader knows it from context.
 */
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

namespace serial_detail {

/*! \brief Types stored as their raw bytes (byte-swapped on big-endian hosts). */
template <typename T>
constexpr bool kIsScalar = std::is_arithmetic_v<T> || std::is_enum_v<T>;

template <typename T>
inline void WriteScalars(Stream* strm, const T* data, size_t count) {
  if constexpr (TVM_FFI_IO_NO_ENDIAN_SWAP || sizeof(T) == 1) {
    strm->Write(static_cast<const void*>(data), sizeof(T) * count);
  } else {
    // Swap a copy so the caller's data stays untouched.
    std::vector<T> swapped(data, data + count);
    ffi::ByteSwap(swapped.data(), sizeof(T), count);
    strm->Write(static_cast<const void*>(swapped.data()), sizeof(T) * count);
  }
}

template <typename T>
inline bool ReadScalars(Stream* strm, T* data, size_t count) {
  size_t want = sizeof(T) * count;
  if (strm->Read(static_cast<void*>(data), want) != want) return false;
  if constexpr (!TVM_FFI_IO_NO_ENDIAN_SWAP && sizeof(T) != 1) {
    ffi::ByteSwap(data, sizeof(T), count);
  }
  return true;
}

/*! \brief Length prefixes are always u64, whatever the platform's size_t is. */
inline void WriteCount(Stream* strm, size_t count) {
  uint64_t n = static_cast<uint64_t>(count);
  WriteScalars(strm, &n, 1);
}

inline bool ReadCount(Stream* strm, uint64_t* count) { return ReadScalars(strm, count, 1); }

template <typename String>
inline bool ReadStdString(Stream* strm, String* out) {
  uint64_t size;
  if (!ReadCount(strm, &size)) return false;
  out->resize(static_cast<size_t>(size));
  if (size == 0) return true;
  return strm->Read(static_cast<void*>(&(*out)[0]), static_cast<size_t>(size)) == size;
}

/*! \brief Shared by every key/value container: count, then alternating keys and values. */
template <typename K, typename V, typename Map>
inline void WriteMap(Stream* strm, const Map& map) {
  WriteCount(strm, map.size());
  for (const auto& kv : map) {
    Serializer<K>::Write(strm, kv.first);
    Serializer<V>::Write(strm, kv.second);
  }
}

template <typename K, typename V, typename Insert>
inline bool ReadMap(Stream* strm, Insert insert) {
  uint64_t count;
  if (!ReadCount(strm, &count)) return false;
  for (uint64_t i = 0; i < count; ++i) {
    K key;
    V value;
    if (!Serializer<K>::Read(strm, &key)) return false;
    if (!Serializer<V>::Read(strm, &value)) return false;
    insert(std::move(key), std::move(value));
  }
  return true;
}

}  // namespace serial_detail

/*! \brief No serializer: Stream::Write/Read on such a type fails to compile with a message. */
template <typename T, typename Enable>
struct Serializer {
  static constexpr bool enabled = false;
};

template <typename T>
struct Serializer<T, std::enable_if_t<serial_detail::kIsScalar<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) {
    serial_detail::WriteScalars(strm, &value, 1);
  }
  static bool Read(Stream* strm, T* out) { return serial_detail::ReadScalars(strm, out, 1); }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& dtype) {
    strm->Write(dtype.code);
    strm->Write(dtype.bits);
    strm->Write(dtype.lanes);
  }
  static bool Read(Stream* strm, DLDataType* dtype) {
    return strm->Read(&dtype->code) && strm->Read(&dtype->bits) && strm->Read(&dtype->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& dev) {
    strm->Write(static_cast<int32_t>(dev.device_type));
    strm->Write(static_cast<int32_t>(dev.device_id));
  }
  static bool Read(Stream* strm, DLDevice* dev) {
    int32_t device_type, device_id;
    if (!strm->Read(&device_type) || !strm->Read(&device_id)) return false;
    dev->device_type = static_cast<DLDeviceType>(device_type);
    dev->device_id = device_id;
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& str) {
    serial_detail::WriteCount(strm, str.size());
    strm->Write(static_cast<const void*>(str.data()), str.size());
  }
  static bool Read(Stream* strm, std::string* out) {
    return serial_detail::ReadStdString(strm, out);
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& str) {
    serial_detail::WriteCount(strm, str.size());
    strm->Write(static_cast<const void*>(str.data()), str.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string tmp;
    if (!serial_detail::ReadStdString(strm, &tmp)) return false;
    *out = ffi::String(std::move(tmp));
    return true;
  }
};

template <>
struct Serializer<ffi::Bytes> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Bytes& bytes) {
    serial_detail::WriteCount(strm, bytes.size());
    strm->Write(static_cast<const void*>(bytes.data()), bytes.size());
  }
  static bool Read(Stream* strm, ffi::Bytes* out) {
    std::string tmp;
    if (!serial_detail::ReadStdString(strm, &tmp)) return false;
    *out = ffi::Bytes(std::move(tmp));
    return true;
  }
};

template <typename T, typename Alloc>
struct Serializer<std::vector<T, Alloc>> {
  static constexpr bool enabled = Serializer<T>::enabled;
  static void Write(Stream* strm, const std::vector<T, Alloc>& vec) {
    serial_detail::WriteCount(strm, vec.size());
    strm->WriteArray(vec.data(), vec.size());
  }
  static bool Read(Stream* strm, std::vector<T, Alloc>* out) {
    uint64_t count;
    if (!serial_detail::ReadCount(strm, &count)) return false;
    out->resize(static_cast<size_t>(count));
    return strm->ReadArray(out->data(), out->size());
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = Serializer<A>::enabled && Serializer<B>::enabled;
  static void Write(Stream* strm, const std::pair<A, B>& pair) {
    Serializer<A>::Write(strm, pair.first);
    Serializer<B>::Write(strm, pair.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

template <typename K, typename V, typename... Rest>
struct Serializer<std::map<K, V, Rest...>> {
  using Map = std::map<K, V, Rest...>;
  static constexpr bool enabled = Serializer<K>::enabled && Serializer<V>::enabled;
  static void Write(Stream* strm, const Map& map) { serial_detail::WriteMap<K, V>(strm, map); }
  static bool Read(Stream* strm, Map* out) {
    out->clear();
    return serial_detail::ReadMap<K, V>(
        strm, [out](K&& k, V&& v) { (*out)[std::move(k)] = std::move(v); });
  }
};

template <typename K, typename V, typename... Rest>
struct Serializer<std::unordered_map<K, V, Rest...>> {
  using Map = std::unordered_map<K, V, Rest...>;
  static constexpr bool enabled = Serializer<K>::enabled && Serializer<V>::enabled;
  static void Write(Stream* strm, const Map& map) { serial_detail::WriteMap<K, V>(strm, map); }
  static bool Read(Stream* strm, Map* out) {
    out->clear();
    return serial_detail::ReadMap<K, V>(
        strm, [out](K&& k, V&& v) { (*out)[std::move(k)] = std::move(v); });
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = Serializer<T>::enabled;
  static void Write(Stream* strm, const ffi::Array<T>& arr) {
    serial_detail::WriteCount(strm, arr.size());
    for (const T& item : arr) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t count;
    if (!serial_detail::ReadCount(strm, &count)) return false;
    ffi::Array<T> result;
    result.reserve(static_cast<int64_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      result.push_back(item);
    }
    *out = std::move(result);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = Serializer<K>::enabled && Serializer<V>::enabled;
  static void Write(Stream* strm, const ffi::Map<K, V>& map) {
    serial_detail::WriteMap<K, V>(strm, map);
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* out) {
    ffi::Map<K, V> result;
    if (!serial_detail::ReadMap<K, V>(strm, [&result](K&& k, V&& v) { result.Set(k, v); })) {
      return false;
    }
    *out = std::move(result);
    return true;
  }
};

// ---- Stream's typed members (declared in io.h) ----

template <typename T>
inline void Stream::Write(const T& value) {
  static_assert(Serializer<T>::enabled, "support::Stream: no Serializer for this type");
  Serializer<T>::Write(this, value);
}

template <typename T>
inline bool Stream::Read(T* out) {
  static_assert(Serializer<T>::enabled, "support::Stream: no Serializer for this type");
  return Serializer<T>::Read(this, out);
}

template <typename T>
inline void Stream::WriteArray(const T* data, size_t count) {
  if constexpr (serial_detail::kIsScalar<T>) {
    serial_detail::WriteScalars(this, data, count);  // one bulk write, same bytes as a loop
  } else {
    for (size_t i = 0; i < count; ++i) this->Write(data[i]);
  }
}

template <typename T>
inline bool Stream::ReadArray(T* data, size_t count) {
  if constexpr (serial_detail::kIsScalar<T>) {
    return serial_detail::ReadScalars(this, data, count);
  } else {
    for (size_t i = 0; i < count; ++i) {
      if (!this->Read(data + i)) return false;
    }
    return true;
  }
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
