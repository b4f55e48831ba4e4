"""udrm's build macros: our strict flags, and tests that carry the TSan suppressions file."""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")
load("//:copts.bzl", "UDRM_COPTS")

def udrm_cc_library(name, copts = [], **kwargs):
    cc_library(name = name, copts = UDRM_COPTS + copts, **kwargs)

def udrm_cc_binary(name, copts = [], **kwargs):
    cc_binary(name = name, copts = UDRM_COPTS + copts, **kwargs)

def udrm_cc_test(name, copts = [], deps = [], data = [], **kwargs):
    """A gtest binary; links gtest_main unless the test brings its own main."""
    cc_test(
        name = name,
        copts = UDRM_COPTS + copts,
        deps = deps + ["@gtest//:gtest", "@gtest_main//:gtest_main"],
        data = data + ["//tools:tsan.supp"],
        **kwargs
    )
