// vm::Ref<T> — an owning handle to an intrusively reference-counted vm object (Bo, VmBo, Gpuvm).
//
// T provides Get() (take a reference) and Put() (drop one; the last Put destroys the object, as
// kref_put). A Ref holds exactly one reference: copying takes another, destruction drops it.
// Thread-safety: as a shared_ptr — one Ref per thread, the count is atomic.
#ifndef UDRM_VM_GPUVM_REF_H_
#define UDRM_VM_GPUVM_REF_H_

#include <utility>

namespace vm {

template <typename T>
class Ref {
 public:
  Ref() = default;
  // Takes ownership of one reference the caller already holds.
  static Ref Adopt(T* p) {
    Ref r;
    r.p_ = p;
    return r;
  }
  // Takes a new reference on `p` (may be null).
  static Ref Share(T* p) {
    if (p != nullptr) p->Get();
    return Adopt(p);
  }
  Ref(const Ref& o) : p_(o.p_) {
    if (p_ != nullptr) p_->Get();
  }
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(Ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Ref() { reset(); }

  void reset() {
    if (T* p = std::exchange(p_, nullptr)) p->Put();
  }
  // Gives the reference back to the caller without dropping it.
  [[nodiscard]] T* release() { return std::exchange(p_, nullptr); }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }
  friend bool operator==(const Ref& a, const Ref& b) { return a.p_ == b.p_; }

 private:
  T* p_ = nullptr;
};

}  // namespace vm

#endif  // UDRM_VM_GPUVM_REF_H_
