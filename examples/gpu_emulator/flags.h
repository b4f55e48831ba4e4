// gpu_emulator's command line: --name=value flags, --help. (Not absl flags: their headers use
// std::atomic_thread_fence, which GCC's -Wtsan rejects in the TSan build.)
#ifndef UDRM_EXAMPLES_GPU_EMULATOR_FLAGS_H_
#define UDRM_EXAMPLES_GPU_EMULATOR_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace gpu_emulator {

struct Flags {
  int contexts = 4;
  int jobs = 5000;
  absl::Duration duration = absl::Seconds(4);
  uint32_t seed = 1;
  int hang = -1;
  int fault = -1;
  int gpu_threads = 4;
  uint64_t elements = 65536;
  absl::Duration timeout = absl::Milliseconds(300);
  std::string out_dir;
  bool help = false;
};

// Parses argv[1..]; false (and a message on stderr) for an unknown flag or a bad value.
bool ParseFlags(int argc, char** argv, Flags* flags);
// The --help text.
std::string FlagsHelp();

}  // namespace gpu_emulator

#endif  // UDRM_EXAMPLES_GPU_EMULATOR_FLAGS_H_
