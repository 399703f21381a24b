/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file src/support/bytes_io.h
 * \brief Streams over an in-memory byte buffer: the runtime loads executables, device modules and
 *        parameter blobs from ffi::Bytes / std::string through these.
 */
#ifndef TVM_SUPPORT_BYTES_IO_H_
#define TVM_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*!
 * \brief Reads sequentially from a byte buffer it does not copy.
 * The std::string and pointer forms borrow: the caller keeps the data alive while reading (every
 * use in the runtime reads a function argument in place). The ffi::Bytes form holds a reference,
 * so it is safe even on a temporary.
 */
class BytesInStream : public Stream {
 public:
  BytesInStream(const void* data, size_t size)
      : data_(static_cast<const char*>(data)), size_(size) {}
  explicit BytesInStream(const std::string& data) : BytesInStream(data.data(), data.size()) {}
  // A temporary std::string would be destroyed before the first Read.
  explicit BytesInStream(std::string&& data) = delete;
  explicit BytesInStream(const ffi::Bytes& data)
      : holder_(data), data_(holder_.data()), size_(holder_.size()) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }

  size_t Write(const void* ptr, size_t size) final {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

  /*! \brief Bytes consumed so far. */
  size_t Tell() const { return pos_; }

 private:
  ffi::Bytes holder_;
  const char* data_;
  size_t size_;
  size_t pos_{0};
};

/*! \brief Appends everything written to a caller-owned std::string. */
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}

  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

  size_t Read(void* ptr, size_t size) final {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BYTES_IO_H_
