// udrm::StatusTag — which udrm condition a status reports, carried as an absl::Status payload.
//
// Code that must know *which* error happened (a ww-mutex back-off, an already-held lock, an
// already-signalled fence) tests the tag, never the message: messages are for people and may
// change freely. The tag travels with the status through copies and moves; a status built
// elsewhere with the same code and message carries no tag.
//
// Thread-safety: stateless functions.
#ifndef UDRM_BASE_STATUS_TAG_H_
#define UDRM_BASE_STATUS_TAG_H_

#include "absl/status/status.h"

namespace udrm {

enum class StatusTag : char {
  kBackoff = 'B',          // ww_mutex -EDEADLK: release every lock, LockSlow() the contended one
  kAlreadyHeld = 'H',      // ww_mutex -EALREADY: the context holds this mutex already
  kAlreadySignaled = 'S',  // dma_fence_add_callback -ENOENT: the fence has signalled
};

// `status` (not OK) with `tag` attached. Contract: `status` is not OK.
absl::Status WithTag(absl::Status status, StatusTag tag);

// True if `status` carries `tag`. Non-blocking; no allocation.
bool HasTag(const absl::Status& status, StatusTag tag);

}  // namespace udrm

#endif  // UDRM_BASE_STATUS_TAG_H_
