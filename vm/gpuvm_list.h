// vm::internal::IntrusiveList — a doubly linked list threaded through its elements (the kernel's
// list_head), so that joining or leaving a list never allocates: the VmBo lists of a Gpuvm
// (extobj, evict, deferred) and of a Bo (its VmBos) change on paths that must not allocate.
//
// An element of type T is on a list through a ListLink<T> member; `Tag` selects which one: T
// provides `ListLink<T>& link(Tag)`. Membership is not tracked here (the owner keeps its flag).
// Thread-safety: none; the owner's lock guards the list and the links.
#ifndef UDRM_VM_GPUVM_LIST_H_
#define UDRM_VM_GPUVM_LIST_H_

namespace vm::internal {

// The lists a VmBo can be on (vm/vm_bo.h).
struct ExtobjTag {};    // Gpuvm's extobj list
struct EvictTag {};     // Gpuvm's evict list
struct DeferredTag {};  // Gpuvm's deferred-put list
struct BoTag {};        // its Bo's VmBo list (obj->gpuva.list)

template <typename T>
struct ListLink {
  T* prev = nullptr;
  T* next = nullptr;
};

template <typename T, typename Tag>
class IntrusiveList {
 public:
  bool empty() const { return head_ == nullptr; }
  T* front() const { return head_; }
  static T* Next(T* x) { return x->link(Tag{}).next; }

  void PushBack(T* x) {
    ListLink<T>& l = x->link(Tag{});
    l.prev = tail_;
    l.next = nullptr;
    (tail_ != nullptr ? tail_->link(Tag{}).next : head_) = x;
    tail_ = x;
  }
  // Contract: `x` is on this list.
  void Erase(T* x) {
    ListLink<T>& l = x->link(Tag{});
    (l.prev != nullptr ? l.prev->link(Tag{}).next : head_) = l.next;
    (l.next != nullptr ? l.next->link(Tag{}).prev : tail_) = l.prev;
    l.prev = l.next = nullptr;
  }
  // Moves every element to a new list, leaving this one empty.
  IntrusiveList TakeAll() {
    IntrusiveList out;
    out.head_ = head_;
    out.tail_ = tail_;
    head_ = tail_ = nullptr;
    return out;
  }
  // Calls f(x) for each element in order; `f` may erase x (the next one is read first).
  template <typename F>
  void ForEach(F&& f) const {
    for (T* x = head_; x != nullptr;) {
      T* next = Next(x);
      f(x);
      x = next;
    }
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
};

}  // namespace vm::internal

#endif  // UDRM_VM_GPUVM_LIST_H_
