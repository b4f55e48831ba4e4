"""Runs a scheduler test once per executor kind (see sched_test_util.h)."""

load("//tools:build_defs.bzl", "udrm_cc_test")

# name suffix -> UDRM_SCHED_EXECUTOR
EXECUTOR_KINDS = {
    "": "own",
    "_pool1": "pool:1",
    "_pool4": "pool:4",
    "_tbb2": "tbb:2",
}

def sched_test_matrix(name, **kwargs):
    for suffix, kind in EXECUTOR_KINDS.items():
        udrm_cc_test(
            name = name + suffix,
            env = {"UDRM_SCHED_EXECUTOR": kind},
            **kwargs
        )
