#include "examples/gpu_emulator/flags.h"

#include <cstdio>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gpu_emulator {
namespace {

struct Flag {
  const char* help;
  std::function<bool(const std::string&)> set;
};

std::map<std::string, Flag> Table(Flags* f) {
  auto int_flag = [](int* v) { return [v](const std::string& s) { return absl::SimpleAtoi(s, v); }; };
  auto duration_flag = [](absl::Duration* v) {
    return [v](const std::string& s) { return absl::ParseDuration(s, v); };
  };
  return {
      {"contexts", {"user contexts (1..16), each with its own VM [4]", int_flag(&f->contexts)}},
      {"jobs", {"GPU jobs per context at most, 5 per iteration [5000]", int_flag(&f->jobs)}},
      {"duration", {"no new iteration starts after this [4s]", duration_flag(&f->duration)}},
      {"seed", {"seeds every fill value and saxpy factor [1]",
                [f](const std::string& s) { return absl::SimpleAtoi(s, &f->seed); }}},
      {"hang", {"this context's saxpy of iteration 1 never finishes [-1: none]", int_flag(&f->hang)}},
      {"fault", {"a rebind of this context faults in the page table [-1: none]", int_flag(&f->fault)}},
      {"gpu_threads", {"emulated GPU threads (shader cores) [4]", int_flag(&f->gpu_threads)}},
      {"elements", {"floats per buffer [65536]",
                    [f](const std::string& s) { return absl::SimpleAtoi(s, &f->elements); }}},
      {"timeout", {"the engines' job timeout (TDR) [300ms]", duration_flag(&f->timeout)}},
      {"out_dir", {"where trace.json and timeline.svg go [$BUILD_WORKING_DIRECTORY, else .]",
                   [f](const std::string& s) { return f->out_dir = s, true; }}},
  };
}

}  // namespace

bool ParseFlags(int argc, char** argv, Flags* flags) {
  const std::map<std::string, Flag> table = Table(flags);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      flags->help = true;
      continue;
    }
    const size_t eq = arg.find('=');
    const auto it = arg.rfind("--", 0) == 0 && eq != std::string::npos
                        ? table.find(arg.substr(2, eq - 2))
                        : table.end();
    if (it == table.end() || !it->second.set(arg.substr(eq + 1))) {
      std::fprintf(stderr, "bad flag %s (--name=value; see --help)\n", arg.c_str());
      return false;
    }
  }
  return true;
}

std::string FlagsHelp() {
  Flags unused;
  std::string out = "usage: gpu_emulator [--name=value ...]\n";
  for (const auto& [name, flag] : Table(&unused)) {
    absl::StrAppend(&out, "  --", name, std::string(14 - name.size(), ' '), flag.help, "\n");
  }
  return out;
}

}  // namespace gpu_emulator
