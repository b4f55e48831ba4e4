"""udrm_fuzzer: a libFuzzer target that also builds and replays without clang.

For each target NAME (source NAME.cc defining LLVMFuzzerTestOneInput, seed corpus corpus/NAME/):
  - cc_binary NAME: under --config=fuzz linked with -fsanitize=fuzzer (libFuzzer's main: run it
    with a corpus directory and -max_total_time=N); in every other build linked with
    replay_main.cc, which runs the target once per file given.
  - cc_test NAME_replay_test: the same binary's sources run over the seed corpus (and any
    regression inputs kept there), in every configuration: the default, TSan, ASan and fuzz
    builds (libFuzzer's main also just runs the files it is given).
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_test")
load("//:copts.bzl", "UDRM_COPTS")

def udrm_fuzzer(name, deps = []):
    corpus = native.glob(["corpus/%s/*" % name])
    common = dict(
        srcs = [name + ".cc"],
        copts = UDRM_COPTS,
        testonly = True,
        linkopts = select({
            "//fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = deps + ["//fuzz:input"] + select({
            "//fuzz:fuzzing": [],
            "//conditions:default": ["//fuzz:replay_main"],
        }),
    )
    cc_binary(name = name, **common)
    cc_test(
        name = name + "_replay_test",
        size = "small",
        args = ["$(location %s)" % f for f in corpus],
        data = corpus + ["//tools:tsan.supp"],
        **common
    )
