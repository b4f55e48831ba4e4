// udrm::CpuRelax — the spin-wait hint (x86 PAUSE; nothing elsewhere), for bounded spins that
// poll an atomic before falling back to blocking.
#ifndef UDRM_BASE_CPU_RELAX_H_
#define UDRM_BASE_CPU_RELAX_H_

namespace udrm {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace udrm

#endif  // UDRM_BASE_CPU_RELAX_H_
