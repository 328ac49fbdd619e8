#!/usr/bin/env python3
"""Import cycles between the modules (files) of one crate.

    python3 scripts/module-cycles.py crates/berth-agent/src [more src dirs]

Reads every `use` (crate::, super::, self::, child modules) and every path
written in code (`crate::a::b`, `super::x`, `child::f`), outside comments and
`#[cfg(test)]` modules, and resolves each to the module that *defines* the
item (following the crate's own `pub use` re-exports; an item re-exported
from another crate counts as the re-exporting module's). `mod` declarations
and `pub use` re-exports are not dependencies. Prints each cycle (strongly
connected component) with the references that make it, and exits 1 if any.

A heuristic over the text, not a compiler: good enough to find and
guard against cycles, not to prove their absence to rustc's standard.
"""

import os
import re
import sys
from collections import defaultdict

ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+|async\s+|const\s+|extern\s+\"C\"\s+)*"
    r"(?:fn|struct|enum|trait|type|const|static|union|macro_rules!)\s+(\w+)",
    re.M,
)
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)
USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)
PATH = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::\w+)+)")


def strip(text):
    """Drops comments, string literals and `#[cfg(test)]` items."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        j = m.end()
        # Skip the item: up to its `;` or its matching `}`.
        depth = 0
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, self}}` -> [['a','b'], ['a','c','d'], ['a','c']] (with `as` names)."""
    tree = re.sub(r"\s+as\s+", "@", tree)
    tree = re.sub(r"\s+", "", tree)

    def parse(s, prefix):
        result = []
        depth, start = 0, 0
        parts = []
        for k, c in enumerate(s):
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        parts.append(s[start:])
        for part in parts:
            if not part:
                continue
            brace = part.find("{")
            if brace >= 0:
                head = [x for x in part[:brace].split("::") if x]
                result += parse(part[brace + 1 : part.rindex("}")], prefix + head)
            else:
                alias = None
                if "@" in part:
                    part, alias = part.split("@", 1)
                segs = [x for x in part.split("::") if x]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                result.append((prefix + segs, alias))
        return result

    return parse(tree, [])


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # "crate::a::b" -> file
        root = "lib.rs" if os.path.exists(os.path.join(src, "lib.rs")) else "main.rs"
        self.walk(os.path.join(src, root), "crate")
        self.text = {m: strip(open(f).read()) for m, f in self.modules.items()}
        self.children = {
            m: set(MOD_DECL.findall(t)) for m, t in self.text.items()
        }
        self.items = {m: set(ITEM.findall(t)) for m, t in self.text.items()}
        # name -> absolute path of each module's `pub use` and private use.
        self.exports = defaultdict(dict)
        self.imports = defaultdict(dict)
        for m, t in self.text.items():
            for vis, tree in USE.findall(t):
                for segs, alias in expand_use(tree):
                    if not segs or segs[-1] == "*":
                        continue
                    full = self.absolute(m, segs)
                    name = alias or segs[-1]
                    self.imports[m][name] = full
                    if vis:
                        self.exports[m][name] = full

    def walk(self, path, name):
        self.modules[name] = path
        text = strip(open(path).read())
        base = os.path.dirname(path)
        if not path.endswith(("lib.rs", "main.rs", "mod.rs")):
            base = os.path.join(base, os.path.basename(path)[:-3])
        for child in MOD_DECL.findall(text):
            for candidate in (
                os.path.join(base, child + ".rs"),
                os.path.join(base, child, "mod.rs"),
            ):
                if os.path.exists(candidate):
                    self.walk(candidate, name + "::" + child)
                    break

    def absolute(self, module, segs):
        """A path as written in `module` -> absolute segments (or external)."""
        here = module.split("::")
        first = segs[0]
        if first == "crate":
            return ["crate"] + segs[1:]
        if first in ("self", "super"):
            while segs and segs[0] in ("self", "super"):
                if segs[0] == "super":
                    here = here[:-1]
                segs = segs[1:]
            return here + segs
        if module in self.children and first in self.children.get(module, ()):
            return here + segs
        return ["extern"] + segs

    def definer(self, segs, depth=0):
        """The module that defines the item at absolute path `segs`."""
        if not segs or segs[0] != "crate" or depth > 8:
            return None
        # Longest module prefix.
        k = len(segs)
        while k > 0 and "::".join(segs[:k]) not in self.modules:
            k -= 1
        module = "::".join(segs[:k])
        rest = segs[k:]
        if not rest:
            return module
        name = rest[0]
        if name in self.items.get(module, ()):
            return module
        target = self.exports.get(module, {}).get(name) or self.imports.get(module, {}).get(name)
        if target and target[0] == "crate":
            return self.definer(target + rest[1:], depth + 1) or module
        return module

    def edges(self):
        """module -> {module it depends on: [evidence]}"""
        deps = defaultdict(lambda: defaultdict(set))
        for m, t in self.text.items():
            refs = []
            for vis, tree in USE.findall(t):
                if vis:  # re-exports are not uses
                    continue
                for segs, _ in expand_use(tree):
                    if segs and segs[-1] == "*":
                        segs = segs[:-1]
                    if segs:
                        refs.append(self.absolute(m, segs))
            body = USE.sub("", t)
            for p in PATH.findall(body):
                segs = p.split("::")
                if segs[0] in self.imports[m] and segs[0] not in ("crate", "self", "super"):
                    full = self.imports[m][segs[0]]
                    refs.append(full + segs[1:])
                else:
                    refs.append(self.absolute(m, segs))
            for segs in refs:
                target = self.definer(segs)
                if target and target != m:
                    deps[m][target].add("::".join(segs))
        return deps


def cycles(deps, nodes):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, {}):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    found = False
    for src in sys.argv[1:]:
        crate = Crate(src)
        deps = crate.edges()
        comps = cycles(deps, crate.modules)
        print(f"{src}: {len(crate.modules)} modules, {len(comps)} cycle(s)")
        for comp in comps:
            found = True
            print("  cycle: " + " <-> ".join(c.removeprefix("crate::") or "crate" for c in comp))
            members = set(comp)
            for a in comp:
                for b in sorted(deps[a]):
                    if b in members:
                        ev = ", ".join(sorted(deps[a][b])[:4])
                        print(f"    {a.removeprefix('crate::') or 'crate'} -> {b.removeprefix('crate::') or 'crate'}: {ev}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
