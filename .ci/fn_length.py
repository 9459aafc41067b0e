#!/usr/bin/env python3
"""Refuses a function of src/ longer than a screenful: over 120 lines, from its `fn` line to
its closing brace (tests included), as rustfmt lays it out. Prints the longest ones.

Usage: python3 .ci/fn_length.py [src] [limit]
"""
import os
import re
import sys

FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def code(line):
    """The line without comments, strings and character literals, which may hold braces."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return re.sub(r"//.*", "", line)


def functions(path):
    lines = open(path).read().split("\n")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            c = code(lines[j])
            if not opened and c.rstrip().endswith(";") and "{" not in c:
                break  # a declaration without a body
            for ch in c:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                yield m.group(1), i + 1, j - i + 1
                break


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    found = []
    for d, _, names in os.walk(root):
        for f in names:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                found += [(n, p, line, name) for name, line, n in functions(p)]
    found.sort(reverse=True)
    for n, p, line, name in found[:5]:
        print(f"{n:4} lines  {p}:{line} {name}")
    over = [f for f in found if f[0] > limit]
    print(f"{len(found)} functions; {len(over)} over {limit} lines")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
