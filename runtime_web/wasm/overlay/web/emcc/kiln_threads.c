// Threads for TVM's CPU kernels in WebAssembly, without emscripten's pthreads (its JS glue is not
// part of kiln's standalone libraries).
//
// TVM lowers a `parallel` loop to TVMBackendParallelLaunch(lambda, closure, num_task); the lambda
// takes a task id and the task count from its env and does its share of the loop. TVM's web
// runtime runs the lambda once with one task (scripts/build_wasm_runtime.py renames that
// definition away); this one hands tasks 1..n-1 to helper threads and runs task 0 itself.
//
// A helper thread is a Web Worker (or a Node worker) that instantiates the same library on the same
// shared WebAssembly.Memory, moves its stack pointer to a stack of its own, and calls
// kiln_thread_run, which never returns: it waits on `generation` and runs its task of each launch.
// The calling thread spins until the helpers are done, then sleeps if it may (a browser's main
// thread may not block; a worker and Node may), so that a helper the OS has descheduled does not
// cost a spinning core. Parallel loops must not allocate workspace (TVMBackendAllocWorkspace is
// the calling thread's): kiln's schedules keep their tiles in registers or on the stack.
//
// With no helpers (one thread, or a page that is not cross-origin isolated) a launch is a call.
//
// Built twice (scripts/build_wasm_runtime.py): with KILN_THREADS for libraries linked with a shared
// memory, whose linker defines the thread-local symbols used below; without it, for the others (the
// WebGPU library), where a launch is always a call.

#include <stdint.h>
#include <tvm/runtime/c_backend_api.h>

#ifndef KILN_THREADS

int TVMBackendParallelLaunch(FTVMParallelLambda lambda, void* closure, int num_task) {
  TVMParallelGroupEnv env = {NULL, 1};
  return lambda(0, &env, closure);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) { return 0; }

#else

#include <stdatomic.h>
#include <stdlib.h>

#define KILN_MAX_THREADS 16
#define KILN_STACK_BYTES (2 << 20)
// Spins before a helper sleeps on `generation`: kernels of one decode step follow each other by
// microseconds, and waking a sleeping thread costs tens of them.
#define KILN_SPINS (1 << 16)

static struct {
  _Atomic int32_t generation;  // +1 per launch that uses helpers
  _Atomic int32_t remaining;   // helpers that have not finished the current launch
  _Atomic int32_t ready;       // helpers inside kiln_thread_run
  _Atomic int32_t error;       // first non-zero return of a helper's task
  _Atomic int32_t helper_tasks;  // tasks helpers have run, for the tests
  FTVMParallelLambda lambda;
  void* closure;
  int32_t tasks;               // tasks of the current launch, the caller's included
  int32_t helpers;             // helpers launches may use (set once all are ready)
  int32_t busy;                // a launch is running: a nested one runs serially
  int32_t can_block;           // the calling thread may sleep (memory.atomic.wait)
} pool;

// Where helper `i` (1-based) keeps its stack and its thread-local storage.
typedef struct {
  uintptr_t stack_top;
  void* tls;
} HelperMemory;

static HelperMemory helper_memory[KILN_MAX_THREADS];

// Defined by wasm-ld for a shared memory: copies the thread-local template to a block and points
// __tls_base there.
extern void __wasm_init_tls(void* block);

static void* tls_block(void) {
  size_t align = __builtin_wasm_tls_align() < 16 ? 16 : __builtin_wasm_tls_align();
  size_t size = (__builtin_wasm_tls_size() + align - 1) / align * align;
  return aligned_alloc(align, size ? size : align);
}

// Before C++'s static constructors (priority 65535), which may already touch thread_locals.
__attribute__((constructor(101))) static void kiln_init_main_tls(void) {
  void* block = tls_block();
  if (!block) abort();
  __wasm_init_tls(block);
}

// Every helper takes part in (and acknowledges) every launch, those beyond `num_task` with no task,
// so none can fall a launch behind the others.
int TVMBackendParallelLaunch(FTVMParallelLambda lambda, void* closure, int num_task) {
  int32_t tasks = pool.helpers + 1;
  if (num_task > 0 && num_task < tasks) tasks = num_task;
  if (tasks == 1 || pool.busy) {
    TVMParallelGroupEnv env = {NULL, 1};
    return lambda(0, &env, closure);
  }
  pool.busy = 1;
  pool.lambda = lambda;
  pool.closure = closure;
  pool.tasks = tasks;
  atomic_store(&pool.error, 0);
  atomic_store(&pool.remaining, pool.helpers);
  atomic_fetch_add(&pool.generation, 1);
  __builtin_wasm_memory_atomic_notify((int32_t*)&pool.generation, KILN_MAX_THREADS);
  TVMParallelGroupEnv env = {NULL, tasks};
  int rc = lambda(0, &env, closure);
  int32_t left;
  for (int32_t spins = 0; (left = atomic_load(&pool.remaining)) > 0; ++spins) {
    if (spins >= KILN_SPINS && pool.can_block) __builtin_wasm_memory_atomic_wait32((int32_t*)&pool.remaining, left, -1);
  }
  pool.busy = 0;
  return rc ? rc : atomic_load(&pool.error);
}

// Kernels with a `parallel` loop never ask for a barrier (kiln's schedules do not emit one).
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) { return 0; }

// Allocate the stacks and thread-local blocks of `helpers` helper threads; returns the table the
// JS side reads (kiln_thread_memory), or 0 when it cannot.
__attribute__((export_name("kiln_threads_prepare"))) int32_t kiln_threads_prepare(int32_t helpers) {
  if (helpers < 0 || helpers >= KILN_MAX_THREADS) return 0;
  for (int32_t i = 1; i <= helpers; ++i) {
    if (helper_memory[i].stack_top) continue;
    unsigned char* stack = aligned_alloc(16, KILN_STACK_BYTES);
    void* tls = tls_block();
    if (!stack || !tls) return 0;
    helper_memory[i].stack_top = (uintptr_t)(stack + KILN_STACK_BYTES);
    helper_memory[i].tls = tls;
  }
  return 1;
}

__attribute__((export_name("kiln_thread_stack_top"))) uintptr_t kiln_thread_stack_top(int32_t index) {
  return index > 0 && index < KILN_MAX_THREADS ? helper_memory[index].stack_top : 0;
}

// How many helpers are waiting in kiln_thread_run.
__attribute__((export_name("kiln_threads_ready"))) int32_t kiln_threads_ready(void) {
  return atomic_load(&pool.ready);
}

// Let launches use `helpers` of the ready helpers (0: run serially again); `can_block` says whether
// the calling thread may sleep while it waits for them.
__attribute__((export_name("kiln_threads_use"))) int32_t kiln_threads_use(int32_t helpers, int32_t can_block) {
  if (helpers < 0 || helpers > atomic_load(&pool.ready)) return 0;
  pool.helpers = helpers;
  pool.can_block = can_block;
  return 1;
}

__attribute__((export_name("kiln_threads_helper_tasks"))) int32_t kiln_threads_helper_tasks(void) {
  return atomic_load(&pool.helper_tasks);
}

// A helper thread's loop; `index` is 1..helpers. The caller has already moved the stack pointer to
// kiln_thread_stack_top(index).
__attribute__((export_name("kiln_thread_run"))) void kiln_thread_run(int32_t index) {
  __wasm_init_tls(helper_memory[index].tls);
  int32_t seen = atomic_load(&pool.generation);
  atomic_fetch_add(&pool.ready, 1);
  for (;;) {
    int32_t now;
    for (int32_t spins = 0; (now = atomic_load(&pool.generation)) == seen; ++spins) {
      if (spins >= KILN_SPINS) __builtin_wasm_memory_atomic_wait32((int32_t*)&pool.generation, seen, -1);
    }
    seen = now;
    if (index < pool.tasks) {
      TVMParallelGroupEnv env = {NULL, pool.tasks};
      int rc = pool.lambda(index, &env, pool.closure);
      atomic_fetch_add(&pool.helper_tasks, 1);
      if (rc) {
        int32_t none = 0;
        atomic_compare_exchange_strong(&pool.error, &none, rc);
      }
    }
    if (atomic_fetch_sub(&pool.remaining, 1) == 1) __builtin_wasm_memory_atomic_notify((int32_t*)&pool.remaining, 1);
  }
}

#endif  // KILN_THREADS
