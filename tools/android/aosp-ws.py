#!/usr/bin/env python3
"""Writes the Cargo workspace that compiles our Android.bp modules the way Soong would.

  aosp-ws.py <out dir> <AOSP dir> <generated aidl dir>     prints the package groups as JSON

One package per Rust module of our Android.bp files: same crate name, same source file, and as
dependencies exactly the modules its `rustlibs`/`proc_macros` name, resolved through
tools/android/aosp-crates.toml: our own modules by path, AOSP's crates at the version and
features AOSP ships, AOSP's binder crates compiled from ../shared/aosp, the AIDL crate from
AOSP's aidl compiler. A missing rustlibs entry is therefore a compile error here, as in Soong.
Nothing is copied: every [lib]/[[bin]] path points at the repo's or AOSP's own files; the only
files written are manifests and build scripts.

Soong emulation (build/soong/rust):
  - target_os = "android" for our crates: each package's build script sets the cfg (the host
    has no Android target); deps stay Linux.
  - `lints: "vendor"` / `clippy_lints: "vendor"`: -D warnings, -A deprecated; clippy's
    complexity, perf and style groups off (config/lints.go); AOSP's own crates: lints off.
  - vendor variant: RUSTFLAGS --cfg android_vndk --cfg android_vendor (set by the caller), and
    bindgen sees -D__ANDROID_VENDOR__.
"""
import json
import os
import re
import shutil
import sys
import tomllib

sys.path.insert(0, os.path.dirname(__file__))
import bp  # noqa: E402

OUT, AOSP, AIDL_GEN = (os.path.abspath(a) for a in sys.argv[1:4])
ROOT = os.getcwd()
table = tomllib.load(open("tools/android/aosp-crates.toml", "rb"))
# android/third_party/ holds Android.bp files for integrator imports, not our code: their crates
# come from crates.io here, at the version the import pins (aosp-crates.toml [imports]).
mods = [m for m in bp.all_modules() if m["type"].startswith("rust_") and not m["file"].startswith("android/third_party/")]
defaults = {m["name"]: m for m in mods if m["type"] == "rust_defaults"}
mods = [m for m in mods if m["type"] != "rust_defaults"]
by_name = {m["name"]: m for m in mods}

VENDOR_LINTS = """
[lints.rust]
warnings = { level = "deny", priority = -2 }
deprecated = "allow"
# The build script sets the builtin cfg target_os = "android" (tools/android/aosp-ws.py).
explicit_builtin_cfgs_in_flags = "allow"
[lints.clippy]
complexity = { level = "allow", priority = -1 }
perf = { level = "allow", priority = -1 }
style = { level = "allow", priority = -1 }
"""
NO_LINTS = """
[lints.rust]
warnings = "allow"
"""


def q(s):
    return json.dumps(s)


def pkg_name(module):
    return re.sub(r"[^A-Za-z0-9_-]", "_", module)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        open(path, "w").write(text)


written = set()


def package(name, crate, body, deps, build=None, lints=NO_LINTS):
    written.add(name)
    # The tree's rustc (AOSP_RUST, set by aosp-checks): the MSRV-aware resolver picks
    # transitive versions it can build, and clippy's incompatible_msrv flags newer std APIs.
    msrv = ".".join(os.environ.get("AOSP_RUST", "1.83.0").split(".")[:2])
    head = (f'[package]\nname = {q(name)}\nversion = "0.0.0"\nedition = "2021"\n'
            f'rust-version = {q(msrv)}\npublish = false\n')
    if build:
        head += f"build = {q(build)}\n"
    text = head + "\n" + body + "\n[dependencies]\n" + "".join(
        f"{k} = {v}\n" for k, v in sorted(deps.items())) + lints
    write(os.path.join(OUT, name, "Cargo.toml"), text)


def crate_dep(c):
    spec = {"package": c["crate"], "version": c["version"]}
    if "features" in c:
        spec["features"] = c["features"]
    if c.get("default-features") is False:
        spec["default-features"] = False
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in spec.items()) + " }"


def path_dep(pkg):
    return f'{{ path = "../{pkg}", package = {q(pkg)} }}'


# --- AOSP's crates, from their own sources ---------------------------------------------------
native = f"{AOSP}/frameworks-native/libs/binder"
write(f"{OUT}/bindgen_flags.rs", open(os.path.join(ROOT, "tools/android/bindgen_flags.rs")).read())
package("binder_ndk_sys", "binder_ndk_sys",
        f'[lib]\nname = "binder_ndk_sys"\npath = {q(native + "/rust/sys/lib.rs")}\n'
        f'\n[build-dependencies]\nbindgen = "=0.70.1"\n',
        {"libc": crate_dep(table["crates"]["liblibc"])}, build="build.rs")
write(f"{OUT}/binder_ndk_sys/build.rs", f"""// libbinder_ndk_bindgen (frameworks/native/libs/binder/rust/Android.bp): its flag file, its
// bindgen_flags and cflags, over the NDK headers.
include!("../bindgen_flags.rs");
fn main() {{
    let native = {q(native)};
    let b = bindgen::Builder::default()
        .header(format!("{{native}}/rust/sys/BinderBindings.hpp"))
        .clang_args(["-x", "c++", "-std=c++17", "-DANDROID_PLATFORM"])
        .clang_arg(format!("-I{{native}}/ndk/include_ndk"))
        .clang_arg(format!("-I{{native}}/ndk/include_platform"))
        .clang_arg(format!("-I{{native}}/ndk/include_cpp"))
        .blocklist_type("sockaddr")
        .raw_line("use libc::sockaddr;");
    let b = apply_flag_file(b, &format!("{{native}}/rust/libbinder_ndk_bindgen_flags.txt"));
    generate(b);
}}
""")
package("binder", "binder",
        f'[lib]\nname = "binder"\npath = {q(native + "/rust/src/lib.rs")}\n',
        {"binder_ndk_sys": path_dep("binder_ndk_sys"),
         "downcast-rs": '"1"',
         "libc": crate_dep(table["crates"]["liblibc"]),
         "log": crate_dep(table["crates"]["liblog_rust"]),
         "zerocopy": '{ version = "0.8", features = ["derive", "alloc"] }'}, build="build.rs")
write(f"{OUT}/binder/build.rs", """fn main() {
    println!("cargo::rustc-check-cfg=cfg(android_vendor, android_vndk, android_ndk, trusty)");
}
""")
rp = f"{native}/rust/tests/parcel_fuzzer/random_parcel"
package("binder_random_parcel_bindgen", "binder_random_parcel_bindgen",
        f'[lib]\nname = "binder_random_parcel_bindgen"\npath = "lib.rs"\n'
        f'\n[build-dependencies]\nbindgen = "=0.70.1"\n',
        {"binder": path_dep("binder")}, build="build.rs")
write(f"{OUT}/binder_random_parcel_bindgen/lib.rs",
      '// What Soong compiles for a rust_bindgen module: the bindings alone.\n'
      'include!(concat!(env!("OUT_DIR"), "/bindings.rs"));\n')
write(f"{OUT}/binder_random_parcel_bindgen/build.rs", f"""// libbinder_random_parcel_bindgen (random_parcel/Android.bp).
include!("../bindgen_flags.rs");
fn main() {{
    let b = bindgen::Builder::default()
        .header({q(rp + "/wrappers/RandomParcelWrapper.hpp")})
        .clang_args(["-x", "c++", "-std=c++17"])
        .allowlist_function("createRandomParcel")
        .allowlist_function("fuzzRustService");
    generate(b);
}}
""")
package("binder_random_parcel_rs", "binder_random_parcel_rs",
        f'[lib]\nname = "binder_random_parcel_rs"\npath = {q(rp + "/src/lib.rs")}\n',
        {"binder": path_dep("binder"), "binder_random_parcel_bindgen": path_dep("binder_random_parcel_bindgen")})

# librustutils: its system_properties module (the one this project uses) over bindgen of its
# own wrapper header. Its users and sockets modules need libcutils headers this host lacks.
ru = f"{AOSP}/system-librustutils"
package("system_properties_bindgen", "system_properties_bindgen",
        '[lib]\nname = "system_properties_bindgen"\npath = "lib.rs"\n'
        '\n[build-dependencies]\nbindgen = "=0.70.1"\n',
        {"libc": crate_dep(table["crates"]["liblibc"])}, build="build.rs")
write(f"{OUT}/system_properties_bindgen/lib.rs",
      '// What Soong compiles for a rust_bindgen module: the bindings alone.\n'
      'include!(concat!(env!("OUT_DIR"), "/bindings.rs"));\n')
write(f"{OUT}/system_properties_bindgen/build.rs", f"""// libsystem_properties_bindgen (system/librustutils/Android.bp), its bindgen_flags; bionic's
// declarations from tools/android/bionic (glibc has no <sys/system_properties.h>).
include!("../bindgen_flags.rs");
fn main() {{
    let mut b = bindgen::Builder::default()
        .header({q(ru + "/bindgen/system_properties.h")})
        .clang_arg({q("-I" + os.path.join(ROOT, "tools/android/bionic"))})
        .blocklist_type("timespec")
        .raw_line("use libc::timespec;");
    for f in ["find", "foreach", "read_callback", "set", "wait"] {{
        b = b.allowlist_function(format!("__system_property_{{f}}"));
    }}
    generate(b);
}}
""")
package("rustutils", "rustutils", '[lib]\nname = "rustutils"\npath = "lib.rs"\n',
        {"anyhow": crate_dep(table["crates"]["libanyhow"]),
         "libc": crate_dep(table["crates"]["liblibc"]),
         "thiserror": crate_dep(table["crates"]["libthiserror"]),
         "system_properties_bindgen": path_dep("system_properties_bindgen")})
write(f"{OUT}/rustutils/lib.rs", f"""//! librustutils (system/librustutils/lib.rs) with the module this project uses.
#[path = {q(ru + "/system_properties.rs")}]
pub mod system_properties;
""")

# --- the AIDL crates Soong generates (<iface>-V<N>-rust) -------------------------------------
aidl_pkgs = {}
for m in bp.all_modules():
    if m["type"] == "aidl_interface":
        for v in m.get("versions_with_info", []):
            module = f"{m['name']}-V{v['version']}-rust"
            pkg = pkg_name(module)
            crate = m["name"].replace(".", "_")
            lib_rs = f"{AIDL_GEN}/rust-V{v['version']}/lib.rs"
            package(pkg, crate, f"[lib]\nname = {q(crate)}\npath = {q(lib_rs)}\n",
                    {"binder": path_dep("binder"), "static_assertions": '"1"', "async-trait": '"0.1"'})
            aidl_pkgs[module] = (pkg, crate)

# --- our modules -----------------------------------------------------------------------------
# Soong passes no --check-cfg: a cfg some of our modules set (`cfgs:`, e.g. the v1 VTS's
# aidl_v1) is known to all of them, as the same sources build with and without it.
soong_cfgs = sorted({c for m in mods for c in m.get("cfgs", [])})
write(f"{OUT}/android_cfg.rs", """// Stands in for the Android target this host lacks: our crates see target_os = "android"
// (and still target_os = "linux", which none of them tests). Dependencies stay Linux builds.
fn main() {
    println!("cargo::rustc-cfg=target_os=\\"android\\"");
""" + "".join(f'    println!("cargo::rustc-check-cfg=cfg({c})");\n' for c in soong_cfgs) + "}\n")
groups = {"vendor": [], "core": [], "tests": [], "ours": []}
problems = []
for m in mods:
    name = m["name"]
    pkg = pkg_name(name)
    props = dict(m)
    for d in m.get("defaults", []):
        for k, v in defaults.get(d, {}).items():
            if isinstance(v, list):
                props[k] = v + props.get(k, [])
            else:
                props.setdefault(k, v)
    crate = props.get("crate_name", name.replace("-", "_").replace(".", "_"))
    src = os.path.join(ROOT, os.path.dirname(m["file"]), props["srcs"][0])
    kind = m["type"]
    if kind in ("rust_library", "rust_library_rlib"):
        body = f"[lib]\nname = {q(crate)}\npath = {q(src)}\n"
    elif kind == "rust_test" and props.get("test_harness", True):
        body = f"[[test]]\nname = {q(crate)}\npath = {q(src)}\n"
    else:  # rust_binary, rust_fuzz, rust_test without the libtest harness
        body = f"[[bin]]\nname = {q(crate)}\npath = {q(src)}\ntest = false\n"
    deps = {}
    for lib in props.get("rustlibs", []) + props.get("proc_macros", []):
        if lib in by_name:
            other = by_name[lib]
            deps[other.get("crate_name", lib)] = path_dep(pkg_name(lib))
        elif lib in aidl_pkgs:
            deps[aidl_pkgs[lib][1]] = path_dep(aidl_pkgs[lib][0])
        elif lib in table.get("crates", {}):
            c = table["crates"][lib]
            deps[c["crate"].replace("-", "_")] = crate_dep(c)
        elif lib in table.get("imports", {}):
            c = table["imports"][lib]
            deps[c["crate"].replace("-", "_")] = crate_dep(c)
        elif lib in table.get("aosp", {}):
            c = table["aosp"][lib]
            deps[c["crate"]] = path_dep(c["crate"])
        else:
            problems.append(f"{m['file']}: {name}: {lib} is unknown (see the module-name check)")
    if kind == "rust_fuzz":  # rust_fuzz links libfuzzer-sys itself
        deps["libfuzzer_sys"] = crate_dep(table["crates"]["liblibfuzzer_sys"])
    build = "../android_cfg.rs"
    if props.get("cfgs"):  # Soong's `cfgs: [...]` (rustc --cfg), e.g. the v1 VTS's aidl_v1
        cfgs = props["cfgs"]
        write(f"{OUT}/{pkg}/build.rs", "// Generated: target_os = \"android\" and this module's Soong cfgs.\n"
              "fn main() {\n    println!(\"cargo::rustc-cfg=target_os=\\\"android\\\"\");\n"
              + "".join(f'    println!("cargo::rustc-check-cfg=cfg({c})");\n' for c in soong_cfgs)
              + "".join(f'    println!("cargo::rustc-cfg={c}");\n' for c in cfgs)
              + "}\n")
        build = "build.rs"
    package(pkg, crate, body, deps, build=build, lints=VENDOR_LINTS)
    groups["ours"].append(pkg)
    if kind == "rust_test" and props.get("test_harness", True):
        groups["tests"].append(pkg)  # compiled with --test; device tests are core modules
    elif props.get("vendor") or props.get("vendor_available"):
        groups["vendor"].append(pkg)
    if not props.get("vendor") and pkg not in groups["tests"]:
        groups["core"].append(pkg)

for d in os.listdir(OUT):  # packages of modules that no longer exist
    if d not in written and os.path.isdir(os.path.join(OUT, d)) and d != "target":
        shutil.rmtree(os.path.join(OUT, d))
members = sorted(written)
write(f"{OUT}/Cargo.toml", "# Generated by tools/android/aosp-ws.py: do not edit.\n[workspace]\nresolver = \"2\"\n"
      "members = [" + ", ".join(q(x) for x in members) + "]\n")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
json.dump(groups, sys.stdout)
