#!/usr/bin/env python3
"""Reads the project's Android.bp files for tools/android/aosp-checks (no Soong here).

A small parser for the Blueprint subset Android.bp files use (modules `type { key: value }`,
strings, bools, integers, lists, nested maps, `//` comments), and three commands:

  bp.py aidl-interface aidl/Android.bp   shell assignments IFACE, STABILITY, FROZEN, VERSIONS
  bp.py modules                          JSON: every module of every tracked Android.bp
  bp.py check-names                      every rustlibs/shared_libs/static_libs entry resolves
"""
import json
import os
import re
import subprocess
import sys

TOKEN = re.compile(r'\s*(?://[^\n]*\n?\s*)*(?:("(?:[^"\\]|\\.)*")|([{}\[\]:,=+])|(\w[\w.-]*))')


def parse(text, path):
    toks, pos = [], 0
    text = text.rstrip() + "\n"
    while True:
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() and not re.fullmatch(r"(\s*//[^\n]*\n?)*\s*", text[pos:]):
                sys.exit(f"{path}: cannot parse near {text[pos:pos + 40]!r}")
            break
        pos = m.end()
        toks.append(m.group(1) or m.group(2) or m.group(3))
    i = 0

    def value():
        nonlocal i
        t = toks[i]
        i += 1
        if t.startswith('"'):
            return json.loads(t)
        if t == "[":
            out = []
            while toks[i] != "]":
                out.append(value())
                if toks[i] == ",":
                    i += 1
            i += 1
            return out
        if t == "{":
            return body()
        if t in ("true", "false"):
            return t == "true"
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        sys.exit(f"{path}: unsupported value {t!r} (variables are not used in this project)")

    def body():
        nonlocal i
        out = {}
        while toks[i] != "}":
            key = toks[i]
            assert toks[i + 1] == ":", f"{path}: expected ':' after {key}"
            i += 2
            out[key] = value()
            if toks[i] == ",":
                i += 1
        i += 1
        return out

    modules = []
    while i < len(toks):
        kind = toks[i]
        assert toks[i + 1] == "{", f"{path}: expected '{{' after {kind}"
        i += 2
        props = body()
        modules.append({"type": kind, "file": path, **props})
    return modules


def all_modules():
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "Android.bp", "*/Android.bp"],
        capture_output=True, text=True, check=True).stdout.split()
    mods = []
    for f in sorted(files):
        if os.path.exists(f):
            mods += parse(open(f).read(), f)
    return mods


def aidl_interface(path):
    mods = [m for m in parse(open(path).read(), path) if m["type"] == "aidl_interface"]
    if len(mods) != 1:
        sys.exit(f"{path}: expected one aidl_interface, found {len(mods)}")
    m = mods[0]
    versions = [v["version"] for v in m.get("versions_with_info", [])] or m.get("versions", [])
    print(f"IFACE={m['name']}")
    print(f"STABILITY={m.get('stability', '')}")
    print(f"FROZEN={'true' if m.get('frozen') else 'false'}")
    print(f"VERSIONS='{' '.join(versions)}'")


def load_table():
    import tomllib
    return tomllib.load(open("tools/android/aosp-crates.toml", "rb"))


def check_names():
    table = load_table()
    mods = all_modules()
    # android/third_party/ holds the ready files of integrator imports: those modules are not
    # ours, and a reference to one resolves only as a documented import ([imports]).
    ours = {m["name"] for m in mods if "name" in m and not m["file"].startswith("android/third_party/")}
    # aidl_interface generates <name>-V<N>-{rust,ndk,cpp,java} for each frozen version.
    for m in mods:
        if m["type"] == "aidl_interface":
            for v in m.get("versions_with_info", []):
                for lang in ("rust", "ndk", "cpp", "java"):
                    ours.add(f"{m['name']}-V{v['version']}-{lang}")
    aosp = set(table["crates"]) | set(table.get("aosp", {})) | set(table.get("platform", {}))
    host_only = {n for sect in ("crates", "aosp") for n, c in table.get(sect, {}).items() if c.get("vendor") is False}
    imports = set(table.get("imports", {}))
    bad, seen = [], 0
    for m in mods:
        for key in ("rustlibs", "shared_libs", "static_libs", "proc_macros"):
            for lib in m.get(key, []):
                seen += 1
                if lib in host_only and (m.get("vendor") or m.get("vendor_available")):
                    bad.append(f"{m['file']}: {m.get('name')}: {lib} has no vendor variant in AOSP")
                    continue
                if lib in ours:
                    kind = "ours"
                elif lib in aosp:
                    kind = "AOSP"
                elif lib in imports:
                    kind = "integrator import (docs/android.md)"
                else:
                    bad.append(f"{m['file']}: {m.get('name')}: {key} {lib!r} is neither ours, in AOSP "
                               "(tools/android/aosp-crates.toml), nor a documented import")
                    continue
                print(f"  {m['file']}: {m.get('name')}: {lib} ({kind})")
    for name, imp in table.get("imports", {}).items():
        doc = imp.get("doc")
        if not doc or name not in open(doc).read():
            bad.append(f"import {name}: not documented in {doc}")
        for f in imp.get("files", []):
            if not os.path.exists(f):
                bad.append(f"import {name}: {f} is missing")
    if bad:
        print("\n".join(bad))
        sys.exit(1)
    print(f"{seen} library references, all resolvable")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "aidl-interface":
        aidl_interface(sys.argv[2])
    elif cmd == "modules":
        json.dump(all_modules(), sys.stdout, indent=1)
    elif cmd == "check-names":
        check_names()
    else:
        sys.exit(__doc__)
