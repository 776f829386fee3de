#!/usr/bin/env python3
"""Checks that Cargo.toml's rust-version is what the build really needs: the highest
rust-version among the resolved dependencies (this machine has one toolchain, so the
check reads what each crate declares instead of compiling with an older one). signoff's
own code needs 1.88 (let chains), below that."""
import json
import subprocess
import sys
import tomllib

OWN_CODE = (1, 88)

def version(text):
    return tuple(int(part) for part in text.split("."))[:2]

with open("Cargo.toml", "rb") as manifest:
    declared = version(tomllib.load(manifest)["package"]["rust-version"])
metadata = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked"],
    check=True, capture_output=True, text=True).stdout)
used = {node["id"] for node in metadata["resolve"]["nodes"]}
needs = [(version(p["rust_version"]), p["name"]) for p in metadata["packages"]
         if p.get("rust_version") and p["id"] in used and p["name"] != "signoff"]
needed, by = max(needs + [(OWN_CODE, "signoff's own code")])
show = lambda v: ".".join(map(str, v))
if declared != needed:
    print(f"rust-version is {show(declared)} in Cargo.toml, but the build needs {show(needed)} ({by})",
          file=sys.stderr)
    sys.exit(1)
print(f"ci: rust-version {show(declared)} is what the build needs ({by})")
