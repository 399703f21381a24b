/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file tvm/support/io.h
 * \brief The byte stream interface the runtime reads executables, tensors and RPC packets through.
 *
 * A concrete stream supplies the two raw virtual calls; everything typed (`Write(x)`, `Read(&x)`,
 * `WriteArray`, `ReadArray`) goes through `Serializer<T>` (tvm/support/serializer.h), which
 * fixes the on-disk format shared with the compiler.
 */
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

/*!
 * \brief How a value of type T is written to / read from a Stream.
 * Specialisations provide `enabled = true` plus static `Write(Stream*, const T&)` and
 * `bool Read(Stream*, T*)`. The second parameter only exists so the generic rules in
 * serializer.h can be selected with enable_if; explicit specialisations name just T.
 */
template <typename T, typename Enable = void>
struct Serializer;

class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return the number of bytes actually read (less than size only at end of data). */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \return the number of bytes written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  /*! \brief Write one value in its serialized form. */
  template <typename T>
  void Write(const T& value);
  /*! \brief Read one value; false when the data ran out or was malformed. */
  template <typename T>
  bool Read(T* out);
  /*! \brief Write `count` values back to back, with no length prefix. */
  template <typename T>
  void WriteArray(const T* data, size_t count);
  /*! \brief Read `count` values written by WriteArray. */
  template <typename T>
  bool ReadArray(T* data, size_t count);
};

}  // namespace support
}  // namespace tvm

// The typed members above are defined next to the serializers they dispatch to. Including it here
// means a file that only includes io.h still sees every standard serializer.
#include <tvm/support/serializer.h>

#endif  // TVM_SUPPORT_IO_H_
