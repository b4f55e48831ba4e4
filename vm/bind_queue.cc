#include "vm/bind_queue.h"

#include <utility>

namespace vm {

absl::StatusOr<std::unique_ptr<BindQueue>> BindQueue::Create(BindVm& vm, sched::Priority priority) {
  absl::StatusOr<std::unique_ptr<sched::Entity>> e =
      sched::Entity::Create({&vm.scheduler()}, priority);
  if (!e.ok()) return e.status();
  return std::unique_ptr<BindQueue>(new BindQueue(vm, *std::move(e)));
}

absl::Status BindQueue::Bind(std::span<const BindOp> ops,
                             std::span<const fence::FenceRef> in_fences,
                             std::stop_token cancel) {
  absl::StatusOr<fence::FenceRef> f = Submit(ops, in_fences, cancel);
  if (!f.ok()) return f.status();
  if (absl::Status s = (*f)->Wait(); !s.ok()) return s;
  return (*f)->error();
}

}  // namespace vm
