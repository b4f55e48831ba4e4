"""Repository rules that turn Debian's installed libraries into Bazel targets, offline.

system_library: reads pkg-config at fetch time and exposes one cc_library named like the repository.
debian_abseil: points at Abseil's source from Debian's source package, unpacked by ./bazelw.
"""

def _pkg_config(rctx, flag, pkgs):
    res = rctx.execute(["pkg-config", flag] + pkgs)
    if res.return_code != 0:
        fail("pkg-config %s %s failed (run ./bazelw, which installs the packages): %s" %
             (flag, " ".join(pkgs), res.stderr))
    return res.stdout.strip().split(" ") if res.stdout.strip() else []

def _system_library_impl(rctx):
    cflags = _pkg_config(rctx, "--cflags", rctx.attr.pkgs)
    libs = _pkg_config(rctx, "--libs", rctx.attr.pkgs) + rctx.attr.extra_linkopts
    defines = [f[2:] for f in cflags if f.startswith("-D")]

    # Debian's pkg-config -I flags name system include directories, which the compiler already
    # searches as system directories (quiet for warnings), so only defines and libraries matter.
    rctx.file("BUILD.bazel", """
package(default_visibility = ["//visibility:public"])
cc_library(
    name = "{name}",
    defines = {defines},
    linkopts = {linkopts},
)
""".format(name = rctx.attr.name, defines = repr(defines), linkopts = repr(libs)))

system_library = repository_rule(
    implementation = _system_library_impl,
    attrs = {
        "pkgs": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(),
    },
    local = True,
)

def _debian_abseil_impl(rctx):
    src = rctx.os.environ.get("UDRM_ABSEIL_SRC", "")
    if not src:
        fail("UDRM_ABSEIL_SRC is not set: build through ./bazelw, which fetches Debian's abseil source")
    root = rctx.path(src)
    if not root.get_child("WORKSPACE").exists:
        fail("UDRM_ABSEIL_SRC=%s holds no Abseil source tree; remove it and run ./bazelw again" % src)
    for child in root.readdir():
        rctx.symlink(child, child.basename)

debian_abseil = repository_rule(
    implementation = _debian_abseil_impl,
    environ = ["UDRM_ABSEIL_SRC"],
    local = True,
)
