"""Compiler flags for udrm's own code: strict. Dependencies build with their own (quiet) flags."""

UDRM_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
]

UDRM_TEST_COPTS = UDRM_COPTS
