/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file tvm/support/cuda/nvtx.h
 * \brief Profiler range markers. NVTX exists only for CUDA builds; the web runtime has no
 *        profiler to report to, so a range is a no-op that merely keeps the call sites compiling.
 */
#ifndef TVM_SUPPORT_CUDA_NVTX_H_
#define TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

/*! \brief Marks a named range for the lifetime of the object (here: does nothing). */
class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char* name) {}
  explicit NVTXScopedRange(const std::string& name) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_CUDA_NVTX_H_
