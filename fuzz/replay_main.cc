// The main() of a fuzz target when it is not built with -fsanitize=fuzzer (the normal build):
// runs LLVMFuzzerTestOneInput once per file named on the command line (a directory: every file
// in it), so the seed corpus and every finding replay as a plain test in every configuration.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int RunFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
    return 1;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 0, errors = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg = argv[i];
    if (std::filesystem::is_directory(arg)) {
      for (const auto& e : std::filesystem::directory_iterator(arg)) {
        if (e.is_regular_file()) errors += RunFile(e.path()), ++runs;
      }
    } else {
      errors += RunFile(arg), ++runs;
    }
  }
  std::printf("replay: %d inputs, %d unreadable\n", runs, errors);
  return runs == 0 || errors != 0 ? 1 : 0;
}
