/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file src/support/ring_buffer.h
 * \brief A growable FIFO of bytes, used by the RPC endpoint to buffer channel traffic.
 */
#ifndef TVM_SUPPORT_RING_BUFFER_H_
#define TVM_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  /*! \return the number of bytes written and not yet read. */
  size_t bytes_available() const { return size_; }

  /*! \brief Make room for `n` buffered bytes in total (not `n` more). */
  void Reserve(size_t n) {
    if (n > buf_.size()) Regrow(std::max(n, buf_.size() * 2));
  }

  /*! \brief Pop exactly `size` bytes; that many must be available. */
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, size_) << "RingBuffer: reading more bytes than are buffered";
    char* out = static_cast<char*>(data);
    size_t first = std::min(size, buf_.size() - head_);
    std::memcpy(out, buf_.data() + head_, first);
    std::memcpy(out + first, buf_.data(), size - first);
    Consume(size);
  }

  /*! \brief Append `size` bytes, growing the buffer as needed. */
  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* in = static_cast<const char*>(data);
    size_t tail = Tail();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, in, first);
    std::memcpy(buf_.data(), in + first, size - first);
    size_ += size;
  }

  /*!
   * \brief Hand up to `max_nbytes` buffered bytes (one contiguous run) to
   *        `fsend(const void* data, size_t size) -> size_t consumed`, and pop what it consumed.
   * \return the number of bytes popped.
   */
  template <typename FSend>
  size_t ReadWithCallback(FSend fsend, size_t max_nbytes) {
    size_t chunk = std::min({max_nbytes, size_, buf_.size() - head_});
    if (chunk == 0) return 0;
    size_t n = fsend(static_cast<const void*>(buf_.data() + head_), chunk);
    TVM_FFI_ICHECK_LE(n, chunk);
    Consume(n);
    return n;
  }

  /*!
   * \brief Let `frecv(void* data, size_t size) -> size_t filled` fill up to `max_nbytes` bytes
   *        (one contiguous run of free space) and append what it filled.
   * \return the number of bytes appended; 0 means the source had nothing (e.g. channel closed).
   */
  template <typename FRecv>
  size_t WriteWithCallback(FRecv frecv, size_t max_nbytes) {
    Reserve(size_ + max_nbytes);
    size_t tail = Tail();
    // Free space runs from the tail to the buffer end, or to the head once the data has wrapped.
    size_t contiguous = tail >= head_ && size_ != buf_.size() ? buf_.size() - tail : head_ - tail;
    size_t chunk = std::min(max_nbytes, contiguous);
    if (chunk == 0) return 0;
    size_t n = frecv(static_cast<void*>(buf_.data() + tail), chunk);
    TVM_FFI_ICHECK_LE(n, chunk);
    size_ += n;
    return n;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  size_t Tail() const { return (head_ + size_) % buf_.size(); }

  void Consume(size_t n) {
    size_ -= n;
    // Restart at offset 0 when empty so the next write gets the longest contiguous run.
    head_ = size_ == 0 ? 0 : (head_ + n) % buf_.size();
  }

  // Move the buffered bytes to the front of a larger buffer.
  void Regrow(size_t capacity) {
    std::vector<char> bigger(capacity);
    size_t first = std::min(size_, buf_.size() - head_);
    std::memcpy(bigger.data(), buf_.data() + head_, first);
    std::memcpy(bigger.data() + first, buf_.data(), size_ - first);
    buf_.swap(bigger);
    head_ = 0;
  }

  std::vector<char> buf_;
  size_t head_{0};  // offset of the oldest unread byte
  size_t size_{0};  // bytes buffered
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_RING_BUFFER_H_
