// vm::internal failslab — the kernel's failslab (fault injection into slab allocations) for the
// allocation sites of a bind.
//
// Every place on the bind path that allocates (or takes a resource that can run out) before the
// VA tree changes asks ShouldFailAlloc(site) first and, when it says yes, behaves as if the
// allocation failed: the bind returns ResourceExhausted and changes nothing. A test installs a
// FailslabHook to fail, e.g., the k-th site reached; with no hook installed (always, outside
// tests) the check is one relaxed atomic load and a predicted-not-taken branch.
//
// Thread-safety: SetFailslabHook from one thread while no bind runs; ShouldFailAlloc from any
// thread. The hook is called on the bind caller's thread and must be thread-safe if binds run
// concurrently. Test-only: drivers never install a hook.
#ifndef UDRM_VM_INTERNAL_FAILSLAB_H_
#define UDRM_VM_INTERNAL_FAILSLAB_H_

#include <atomic>

namespace vm::internal {

class FailslabHook {
 public:
  virtual ~FailslabHook() = default;
  // True: the allocation at `site` (a static string naming it) fails.
  virtual bool ShouldFail(const char* site) = 0;
};

// Null: no injection. The hook must outlive its installation (install null before destroying it).
void SetFailslabHook(FailslabHook* hook);

namespace failslab_detail {
extern std::atomic<FailslabHook*> hook;
}  // namespace failslab_detail

inline bool ShouldFailAlloc(const char* site) {
  FailslabHook* h = failslab_detail::hook.load(std::memory_order_acquire);
  return __builtin_expect(h != nullptr, 0) && h->ShouldFail(site);
}

}  // namespace vm::internal

#endif  // UDRM_VM_INTERNAL_FAILSLAB_H_
