"""Builds the image's binary as `docker build` would, without a container engine.

Lays out the build context as .dockerignore leaves it (Docker's rules: patterns relative to the
context root, `**` for any depth, `!` re-includes, the last match wins), then runs the build
stage's RUN command from the Dockerfile in it (BuildKit's --mount options dropped: they only
cache). Prints the path of the binary the image would ship.

Usage: image_build.py OUT_DIR
"""

import fnmatch
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def patterns():
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        out.append((negate, pat))
    return out


def match(pat, rel):
    # fnmatch's * crosses "/", so a pattern without ** is matched part by part.
    if "**" in pat:
        regex = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        return re.fullmatch(regex, rel) is not None
    parts, pparts = rel.split("/"), pat.split("/")
    return len(parts) == len(pparts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pparts))


def ignored(rel, pats):
    # A path is excluded when it or a parent directory is: check each prefix.
    parts = rel.split("/")
    result = False
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for negate, pat in pats:
            if match(pat, prefix):
                result = not negate
        if result and i < len(parts):
            return True
    return result


def build_command():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage, workdir, runs = None, "/", []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            stage = words[-1] if "AS" in words else None
        elif stage == "build" and words[0] == "WORKDIR":
            workdir = words[1]
        elif stage == "build" and words[0] == "RUN":
            runs.append(" ".join(w for w in words[1:] if not w.startswith("--mount=")))
    if not runs:
        sys.exit("Dockerfile: no RUN in the build stage")
    return workdir, runs


def main():
    out = pathlib.Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pats = patterns()
    copied = 0
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, pats)]
        for f in filenames:
            rel = rel_dir + f
            if ignored(rel, pats):
                continue
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, out / rel)
            copied += 1
    for leak in ("data", ".git", "target"):
        assert not (out / leak).exists(), f"{leak} is in the build context"
    workdir, runs = build_command()
    print(f"build context: {copied} files; WORKDIR {workdir}", file=sys.stderr)
    for cmd in runs:
        print(f"RUN {cmd}", file=sys.stderr)
        subprocess.run(["sh", "-c", cmd], cwd=out, check=True)
    binary = out / "paygate"
    assert binary.exists(), "the build stage made no ./paygate"
    print(binary)


if __name__ == "__main__":
    main()
