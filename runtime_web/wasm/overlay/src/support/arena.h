/*
 * Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except
 * in compliance with the License. You may obtain a copy of the License at
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * kiln's own implementation of a header the apache-tvm wheel does not ship. Written from how the
 * shipped runtime sources use it; only the names and signatures they rely on are fixed.
 */
/*!
 * \file src/support/arena.h
 * \brief A bump allocator for short-lived POD scratch (decoded RPC arguments), freed all at once.
 *
 * Memory comes in pages from a PageAllocator policy:
 *   ArenaPageHeader* allocate(size_t min_size);  // a page of >= min_size bytes, header at its
 *                                                // start, `size` and `offset` filled in
 *   void deallocate(ArenaPageHeader* page);
 * (minrpc supplies its own policy that allocates through its IO handler.)
 */
#ifndef TVM_SUPPORT_ARENA_H_
#define TVM_SUPPORT_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

namespace tvm {
namespace support {

/*! \brief Sits at the start of every page. */
struct ArenaPageHeader {
  /*! \brief Next page in the arena's in-use or recycled list. */
  ArenaPageHeader* next;
  /*! \brief Total bytes of the page, header included. */
  size_t size;
  /*! \brief Offset of the first free byte, from the page start. */
  size_t offset;
};

/*! \brief Default page policy: whole multiples of kPageSize from the heap. */
class SimplePageAllocator {
 public:
  static constexpr size_t kPageSize = 16 << 10;

  ArenaPageHeader* allocate(size_t min_size) {
    size_t size = (min_size + kPageSize - 1) / kPageSize * kPageSize;
    ArenaPageHeader* page = static_cast<ArenaPageHeader*>(::operator new(size));
    page->next = nullptr;
    page->size = size;
    page->offset = sizeof(ArenaPageHeader);
    return page;
  }

  void deallocate(ArenaPageHeader* page) { ::operator delete(page); }
};

template <typename PageAllocator>
class GenericArena {
 public:
  explicit GenericArena(PageAllocator alloc = PageAllocator()) : alloc_(std::move(alloc)) {}
  GenericArena(const GenericArena&) = delete;
  GenericArena& operator=(const GenericArena&) = delete;
  ~GenericArena() { FreeAll(); }

  /*! \brief `size` bytes aligned to `align` (a power of two), valid until RecycleAll/FreeAll. */
  void* Alloc(size_t size, size_t align = alignof(std::max_align_t)) {
    if (in_use_ != nullptr) {
      if (void* p = Carve(in_use_, size, align)) return p;
    }
    // Room for the header, the worst-case alignment gap and the block itself.
    size_t need = sizeof(ArenaPageHeader) + align + size;
    ArenaPageHeader* page = TakeRecycled(need);
    if (page == nullptr) page = alloc_.allocate(need);
    page->offset = sizeof(ArenaPageHeader);
    page->next = in_use_;
    in_use_ = page;
    return Carve(page, size, align);
  }

  /*! \brief Uninitialised storage for `count` objects of a trivial type T. */
  template <typename T>
  T* allocate_(size_t count = 1) {
    static_assert(std::is_trivial<T>::value, "the arena never runs destructors");
    return static_cast<T*>(Alloc(sizeof(T) * count, alignof(T)));
  }

  /*! \brief Invalidate every allocation but keep the pages for reuse. */
  void RecycleAll() {
    while (in_use_ != nullptr) {
      ArenaPageHeader* page = in_use_;
      in_use_ = page->next;
      page->next = recycled_;
      recycled_ = page;
    }
  }

  /*! \brief Invalidate every allocation and return all pages to the allocator. */
  void FreeAll() {
    RecycleAll();
    while (recycled_ != nullptr) {
      ArenaPageHeader* page = recycled_;
      recycled_ = page->next;
      alloc_.deallocate(page);
    }
  }

 private:
  // Bump-allocate from `page`, or nullptr when it lacks room.
  static void* Carve(ArenaPageHeader* page, size_t size, size_t align) {
    uintptr_t base = reinterpret_cast<uintptr_t>(page);
    uintptr_t start = (base + page->offset + align - 1) & ~(uintptr_t(align) - 1);
    if (start + size > base + page->size) return nullptr;
    page->offset = start + size - base;
    return reinterpret_cast<void*>(start);
  }

  // Unlink and return a recycled page of at least `need` bytes, if any.
  ArenaPageHeader* TakeRecycled(size_t need) {
    for (ArenaPageHeader** link = &recycled_; *link != nullptr; link = &(*link)->next) {
      ArenaPageHeader* page = *link;
      if (page->size >= need) {
        *link = page->next;
        return page;
      }
    }
    return nullptr;
  }

  PageAllocator alloc_;
  ArenaPageHeader* in_use_{nullptr};    // newest first; allocations come from the head
  ArenaPageHeader* recycled_{nullptr};  // pages ready for reuse
};

using Arena = GenericArena<SimplePageAllocator>;

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_ARENA_H_
