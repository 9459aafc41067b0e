#!/usr/bin/env python3
"""Refuses import cycles between the files of src/, and loops between its top-level units.

Each file is a node. An edge goes from a file to the module file that a path in it names (the
longest prefix that is a file; `use` groups are expanded), outside its `#[cfg(test)]` module:
paths from `crate::`, `super::` and `self::`, and paths through a child module the file
declares (`mod x;` then `x::f()`). A `mod x;` declaration alone is not an edge. Prints every strongly connected
component of more than one file, with the edges inside it, and exits 1 if there is one.

Then the same for the top-level units of src/ (each file or folder directly under it: `config`,
`providers`, `retry`, ...; lib.rs and main.rs are the root, which may name every unit): a unit
imports another when one of its files imports one of the other's. Units in one loop cannot be
understood or changed one at a time, so a loop between them fails too, with the imports that
make it.

Usage: python3 .ci/import_cycles.py [src]
"""
import os
import re
import sys


def modules(root):
    files = {}
    for d, _, names in os.walk(root):
        for f in names:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(d, f)
            parts = os.path.relpath(p, root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            files[tuple(parts)] = p
    return files


def module_of(files, path):
    for i in range(len(path), 0, -1):
        if tuple(path[:i]) in files:
            return tuple(path[:i])
    return None


def expand(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]] (a `use` tree, `as` dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s", "", tree)
    if "{" not in tree:
        return [[s for s in tree.split("::") if s]]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    prefix = [s for s in head.split("::") if s]
    out = [prefix]
    for item in items:
        if item:
            out += [prefix + p for p in expand(item)]
    return out


def edges_of(files, module, path):
    src = open(path).read()
    test = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", src)
    if test:
        src = src[: test.start()]
    src = re.sub(r"//.*", "", src)
    children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", src, re.M))
    heads = "|".join(["crate", "super", "self"] + sorted(children))
    out = set()
    for m in re.finditer(r"(?<![\w:])(" + heads + r")((?:\s*::\s*(?:\w+|\{))+)", src):
        tree = m.group(2)
        if tree.rstrip().endswith("{"):
            # The rest of the group, up to its matching brace.
            depth, i = 1, m.end()
            while depth and i < len(src):
                depth += src[i] == "{"
                depth -= src[i] == "}"
                i += 1
            tree += src[m.end() : i]
        head = m.group(1)
        if head == "crate":
            start = []
        elif head == "super":
            # super of a/b.rs and of a/b/mod.rs is a.
            start = list(module[:-1])
        elif head == "self":
            start = list(module)
        else:
            start = list(module) + [head]
        for p in expand(tree):
            t = module_of(files, [s for s in start + p if s != "self"])
            if t not in (None, module, ()):
                out.add(t)
    return out


def cycles(files, edges):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    sys.setrecursionlimit(10_000)
    for v in files:
        if v not in index:
            visit(v)
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = modules(root)
    edges = {m: edges_of(files, m, p) for m, p in files.items()}
    found = cycles(files, edges)
    for comp in found:
        print(f"{len(comp)} files in one import cycle:")
        for m in sorted(comp, key=lambda m: files[m]):
            inside = sorted(files[t] for t in edges[m] if t in comp)
            print(f"  {files[m]} -> {' '.join(inside)}")
    n = sum(len(c) for c in found)
    print(f"{len(files)} files, {sum(len(e) for e in edges.values())} imports between them, "
          f"{n} in an import cycle")
    units, why = unit_graph(files, edges)
    loops = cycles(units, units)
    for comp in loops:
        print(f"{len(comp)} top-level units in one loop: {', '.join(sorted(comp))}")
        for a in sorted(comp):
            for b in sorted(units[a] & set(comp)):
                print(f"  {a} -> {b}: {' '.join(f'{x} -> {y}' for x, y in why[(a, b)][:3])}")
    print(f"{len(units)} top-level units, {sum(len(e) for e in units.values())} imports between "
          f"them, {sum(len(c) for c in loops)} in a loop")
    sys.exit(1 if n or loops else 0)


def unit_graph(files, edges):
    """The imports between the top-level units of src/ (the root, lib.rs and main.rs, is left
    out: it names every unit), and the file imports behind each."""
    unit = lambda m: m[0] if m else None
    units = {unit(m): set() for m in files if m}
    why = {}
    for m, targets in edges.items():
        for t in targets:
            a, b = unit(m), unit(t)
            if a is None or b is None or a == b:
                continue
            units[a].add(b)
            why.setdefault((a, b), []).append((files[m], files[t]))
    return units, why


if __name__ == "__main__":
    main()
