/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file src/support/base64.h
 * \brief Streams that base64-encode / decode on the fly over another stream.
 *
 * Tensors embedded in JSON graphs are stored as base64 of their binary form (tensor.cc's
 * __data_to_json__ / __data_from_json__). The encoding is RFC 4648's standard alphabet with '='
 * padding and no line breaks, which is what the compiler emits.
 */
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {

inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

/*! \return the 6-bit value of a base64 digit, or -1 for anything else. */
inline int DigitValue(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

inline bool IsSpace(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace base64_detail

/*! \brief Encodes bytes written to it into `sink`; call Finish() once at the end. */
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* bytes = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_[group_len_++] = bytes[i];
      if (group_len_ == 3) EmitGroup();
    }
    return size;
  }

  size_t Read(void* ptr, size_t size) final {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }

  /*! \brief Encode the last partial group with '=' padding and push everything to the sink. */
  void Finish() {
    if (group_len_ != 0) EmitGroup();
    Flush();
  }

 private:
  // Encodes the 1-3 pending bytes; a short group is padded to four characters with '='.
  void EmitGroup() {
    const char* alphabet = base64_detail::Alphabet();
    uint32_t bits = (uint32_t{group_[0]} << 16) |
                    (group_len_ > 1 ? uint32_t{group_[1]} << 8 : 0) |
                    (group_len_ > 2 ? uint32_t{group_[2]} : 0);
    out_ += alphabet[(bits >> 18) & 63];
    out_ += alphabet[(bits >> 12) & 63];
    out_ += group_len_ > 1 ? alphabet[(bits >> 6) & 63] : '=';
    out_ += group_len_ > 2 ? alphabet[bits & 63] : '=';
    group_len_ = 0;
    if (out_.size() >= kFlushSize) Flush();
  }

  void Flush() {
    if (!out_.empty()) sink_->Write(out_.data(), out_.size());
    out_.clear();
  }

  static constexpr size_t kFlushSize = 4096;
  Stream* sink_;
  unsigned char group_[3];
  int group_len_{0};
  std::string out_;
};

/*!
 * \brief Decodes base64 text read from `source`. Whitespace is skipped; the data ends at '=',
 * at the end of the source, or at the first character that is not a base64 digit.
 * The source is read one character at a time so nothing past the encoded data is consumed
 * beyond that terminating character.
 */
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* source) : source_(source) {}

  using Stream::Read;
  using Stream::Write;

  /*! \brief Skip leading whitespace before the encoded data. */
  void InitPosition() {
    int c;
    do {
      c = NextChar();
    } while (c >= 0 && base64_detail::IsSpace(c));
    lookahead_ = c;
  }

  size_t Read(void* ptr, size_t size) final {
    unsigned char* out = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (decoded_pos_ == decoded_len_ && !DecodeGroup()) break;
      out[n++] = decoded_[decoded_pos_++];
    }
    return n;
  }

  size_t Write(const void* ptr, size_t size) final {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  int NextChar() {
    if (lookahead_ != kNoChar) {
      int c = lookahead_;
      lookahead_ = kNoChar;
      return c;
    }
    unsigned char c;
    return source_->Read(&c, 1) == 1 ? c : -1;
  }

  // Reads up to four digits and decodes them into decoded_; false once the data has ended.
  bool DecodeGroup() {
    if (ended_) return false;
    uint32_t bits = 0;
    int ndigits = 0;
    while (ndigits < 4) {
      int c = NextChar();
      if (c >= 0 && base64_detail::IsSpace(c)) continue;
      int v = base64_detail::DigitValue(c);
      if (v < 0) {
        ended_ = true;  // '=', end of input, or a delimiter
        break;
      }
      bits = (bits << 6) | static_cast<uint32_t>(v);
      ++ndigits;
    }
    if (ndigits < 2) return false;  // a lone digit carries no whole byte
    bits <<= 6 * (4 - ndigits);
    decoded_len_ = ndigits - 1;
    decoded_pos_ = 0;
    decoded_[0] = static_cast<unsigned char>(bits >> 16);
    decoded_[1] = static_cast<unsigned char>(bits >> 8);
    decoded_[2] = static_cast<unsigned char>(bits);
    return true;
  }

  static constexpr int kNoChar = -2;
  Stream* source_;
  int lookahead_{kNoChar};
  bool ended_{false};
  unsigned char decoded_[3];
  int decoded_len_{0};
  int decoded_pos_{0};
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BASE64_H_
