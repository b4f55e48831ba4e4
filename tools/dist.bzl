"""udrm_dist: udrm as a library for builds outside this workspace (docs/EMBEDDING.md).

Collects, from one cc_library's transitive closure:
  - udrm's own objects → lib/libudrm.a; Abseil's → lib/libudrm_absl.a (see EMBEDDING.md for why
    Abseil is shipped: it is built here from Debian's source package, and a consumer machine has
    no binary of it);
  - udrm's public headers → include/udrm/<package>/..., their `#include "fence/..."` lines
    rewritten to `#include "udrm/fence/..."`; Abseil's headers → include/udrm/third_party/absl/...;
  - udrm.pc and a CMake package (udrmConfig.cmake, udrmConfigVersion.cmake) naming the system
    libraries the closure links, derived from the closure (an unknown one fails the build);
and packs them, with the licenses, into one deterministic .tar.gz rooted at the install prefix.

The objects packed are the position-independent ones (consumers link PIE executables by default
on Debian), which Bazel builds for every cc_library in every compilation mode: `-c opt` gives an
optimised dist. A configuration without them fails the build rather than pack non-PIC objects.
"""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

_ABSL = "com_google_absl"

# The system libraries (WORKSPACE system_library repositories) the public API may link, by
# repository name: the pkg-config module udrm.pc requires, and how udrmConfig.cmake finds it
# (a find_dependency() of the package's own CMake config where Debian ships one, else a
# pkg-config module through CMake's PkgConfig) and the imported target it links.
def _dep(pc, cmake_find, cmake_target):
    return struct(pc = pc, cmake_find = cmake_find, cmake_target = cmake_target)

_SYSTEM_DEPS = {
    "spdlog": _dep("spdlog", "find_dependency(spdlog)", "spdlog::spdlog"),
    "tbb": _dep("tbb", "find_dependency(TBB)", "TBB::tbb"),
    "tbbmalloc": _dep("tbb", "find_dependency(TBB)", "TBB::tbbmalloc"),
}

# Link flags udrm's and Abseil's own targets may carry (Threads::Threads / -pthread covers them).
_THREAD_FLAGS = ["-pthread", "-lpthread"]

def _objects(cc, manifest, inputs):
    """Adds every object of udrm's and Abseil's to the manifest; returns the system deps."""
    system = {}
    for li in cc.linking_context.linker_inputs.to_list():
        repo = li.owner.workspace_name
        if repo in _SYSTEM_DEPS:
            system[repo] = _SYSTEM_DEPS[repo]
            continue
        if repo not in ("", _ABSL):
            if li.user_link_flags or li.libraries:
                fail(("%s links %s, which udrm_dist cannot name in udrm.pc and udrmConfig.cmake: " +
                      "add it to _SYSTEM_DEPS in tools/dist.bzl") % (li.owner, repo))
            continue
        for flag in li.user_link_flags:
            if flag not in _THREAD_FLAGS:
                fail("%s carries link flag %s, which udrm_dist does not ship: extend tools/dist.bzl" %
                     (li.owner, flag))
        kind = "own_obj" if repo == "" else "absl_obj"
        for lib in li.libraries:
            if lib.objects and not lib.pic_objects:
                fail(("%s has no position-independent objects in this configuration, and " +
                      "consumers link PIE executables: try --force_pic") % li.owner)
            for o in lib.pic_objects:
                manifest.append("%s\t%s" % (kind, o.path))
                inputs.append(o)
    return system

def _headers(cc, manifest, inputs):
    """Adds udrm's headers (path relative to the workspace) and Abseil's (relative to its root)."""
    for h in cc.compilation_context.headers.to_list():
        repo = h.owner.workspace_name
        if repo == "":
            manifest.append("udrm_hdr\t%s\t%s" % (h.path, h.short_path))
        elif repo == _ABSL:
            rel = h.short_path[len("../%s/" % _ABSL):]
            manifest.append("absl_hdr\t%s\t%s" % (h.path, rel))
        else:
            continue
        inputs.append(h)

def _package_files(ctx, system, manifest):
    """Expands udrm.pc and the CMake package for `system`; returns the generated files."""
    requires, finds, targets = [], [], []
    for d in sorted(system.keys()):
        s = system[d]
        if s.pc not in requires:
            requires.append(s.pc)
        if s.cmake_find not in finds:
            finds.append(s.cmake_find)
        targets.append(s.cmake_target)
    subst = {
        "@UDRM_VERSION@": ctx.attr.version,
        "@UDRM_PC_REQUIRES@": " ".join(requires),
        "@UDRM_CMAKE_FIND_DEPENDENCIES@": "\n".join(finds),
        "@UDRM_CMAKE_LINK_TARGETS@": ";".join(targets),
    }
    generated = []
    for tmpl, dest in [
        (ctx.file._pc, "lib/pkgconfig/udrm.pc"),
        (ctx.file._cmake_config, "lib/cmake/udrm/udrmConfig.cmake"),
        (ctx.file._cmake_version, "lib/cmake/udrm/udrmConfigVersion.cmake"),
    ]:
        out = ctx.actions.declare_file("%s_files/%s" % (ctx.label.name, dest))
        ctx.actions.expand_template(template = tmpl, output = out, substitutions = subst)
        generated.append(out)
        manifest.append("file\t%s\t%s" % (out.path, dest))
    return generated

def _udrm_dist_impl(ctx):
    cc = ctx.attr.lib[CcInfo]
    manifest = []  # "kind<TAB>path[<TAB>dest]" lines for tools/dist/make_dist.sh
    inputs = []
    system = _objects(cc, manifest, inputs)
    _headers(cc, manifest, inputs)
    inputs += _package_files(ctx, system, manifest)
    for f, dest in [
        (ctx.file.license, "share/doc/udrm/LICENSE"),
        (ctx.file._absl_license, "share/doc/udrm/third_party/abseil/LICENSE"),
    ] + [(f, "share/doc/udrm/" + f.basename) for f in ctx.files.docs]:
        manifest.append("file\t%s\t%s" % (f.path, dest))
        inputs.append(f)

    manifest_file = ctx.actions.declare_file(ctx.label.name + ".manifest")
    ctx.actions.write(manifest_file, "\n".join(manifest) + "\n")

    cc_toolchain = find_cpp_toolchain(ctx)
    out = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    ctx.actions.run(
        executable = ctx.executable._make_dist,
        arguments = [manifest_file.path, out.path, cc_toolchain.ar_executable],
        inputs = depset(inputs + [manifest_file], transitive = [cc_toolchain.all_files]),
        outputs = [out],
        mnemonic = "UdrmDist",
        progress_message = "Packing %s" % out.short_path,
    )
    return [DefaultInfo(files = depset([out]))]

udrm_dist = rule(
    implementation = _udrm_dist_impl,
    attrs = {
        "lib": attr.label(mandatory = True, providers = [CcInfo]),
        "version": attr.string(mandatory = True),
        "license": attr.label(mandatory = True, allow_single_file = True),
        "docs": attr.label_list(allow_files = [".md"]),
        "_pc": attr.label(default = "//tools:dist/udrm.pc.in", allow_single_file = True),
        "_cmake_config": attr.label(default = "//tools:dist/udrmConfig.cmake.in", allow_single_file = True),
        "_cmake_version": attr.label(
            default = "//tools:dist/udrmConfigVersion.cmake.in",
            allow_single_file = True,
        ),
        "_absl_license": attr.label(default = "@com_google_absl//:LICENSE", allow_single_file = True),
        "_make_dist": attr.label(
            default = "//tools:dist/make_dist.sh",
            executable = True,
            cfg = "exec",
            allow_single_file = True,
        ),
        "_cc_toolchain": attr.label(default = "@bazel_tools//tools/cpp:current_cc_toolchain"),
    },
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
    incompatible_use_toolchain_transition = True,
)
