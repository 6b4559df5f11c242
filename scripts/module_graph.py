#!/usr/bin/env python3
"""Import graph of src/: one node per file, edges from `use crate::…`, `super::…`, `self::…` and
inline `crate::a::b` paths, with `#[cfg(test)]` modules left out. Prints every import that points to a
higher layer (the table LAYERS) and every cycle (strongly connected component of more than one file; a child's use of its own `mod.rs` aside) and exits 1 if any.
Run: python3 scripts/module_graph.py [--edges]"""
import os, re, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
ROOT = os.path.normpath(ROOT)


def files():
    for d, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.relpath(os.path.join(d, f), ROOT)


def module_of(path):
    """src-relative file → module path list (lib.rs / main.rs → [])."""
    p = path[:-3].split(os.sep)
    if p[-1] in ("mod", "lib", "main"):
        p = p[:-1]
    return p


MODS = {}
for f in files():
    if f == "main.rs":
        continue
    MODS[tuple(module_of(f))] = f


def strip_tests(src):
    """Remove `#[cfg(test)] mod … { … }` blocks (brace matching, ignoring braces in strings roughly)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(src):
            c = src[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            j += 1
        i = j
    out.append(src[i:])
    return "".join(out)


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def resolve(segs):
    """Longest prefix of segs naming a file module."""
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in MODS:
            return MODS[tuple(segs[:n])]
    return None


def expand_use(tree):
    """Expand a use tree `a::{b, c::{d}}` into lists of segments (only the prefixes matter)."""
    tree = re.sub(r"\s+", "", tree)
    res = []

    def walk(prefix, t):
        # split t at top-level commas
        parts, depth, cur = [], 0, ""
        for c in t:
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if c == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += c
        if cur:
            parts.append(cur)
        for p in parts:
            if "{" in p:
                head, rest = p.split("{", 1)
                rest = rest[: rest.rfind("}")]
                walk(prefix + [s for s in head.split("::") if s], rest)
            else:
                p = p.split(" as ")[0].split("as")[0] if False else re.sub(r"as\w+$", "", p)
                res.append(prefix + [s for s in p.split("::") if s])

    walk([], tree)
    return res


def edges_of(f):
    src = strip_comments(strip_tests(open(os.path.join(ROOT, f)).read()))
    me = module_of(f)
    out = set()
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", src):
        paths += expand_use(m.group(1))
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", src):
        paths.append(m.group(1).split("::"))
    # `use crate::auth;` or `use crate::shutdown::{self, …}` make `auth::…` / `shutdown::…`
    # paths elsewhere in the file: follow them too.
    for segs in list(paths):
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        if len(segs) >= 2 and segs[0] in ("crate", "super", "self"):
            alias = segs[-1]
            for m in re.finditer(r"(?<![:\w])" + alias + r"((?:::\w+)+)", src):
                paths.append(segs + m.group(1).split("::")[1:])
    for segs in paths:
        if not segs:
            continue
        if segs[0] == "crate":
            abs_ = segs[1:]
        elif segs[0] == "super":
            ups = 0
            while segs and segs[0] == "super":
                segs = segs[1:]
                ups += 1
            abs_ = list(me[: len(me) - ups]) + segs
        elif segs[0] == "self":
            abs_ = list(me) + segs[1:]
        else:
            continue
        abs_ = [x for x in abs_ if x != "self"]
        t = resolve(abs_)
        if t and t != f:
            out.add(t)
    return out


def exempt(a, b):
    """A module may use its parent module's file (`x/y.rs` and `x/y/mod.rs` alike use
    `x/mod.rs`: the parent's re-exports and shared items), and everything may name what
    `lib.rs` declares; the parent's edges to its children still count, so a cycle that runs
    through a folder is found."""
    if a == "lib.rs" or b == "lib.rs":
        return True
    folder = os.path.dirname(a)
    if os.path.basename(a) == "mod.rs":
        folder = os.path.dirname(folder)
    return b == os.path.join(folder, "mod.rs")


G = {f: set() for f in MODS.values()}
for f in list(G):
    G[f] = {t for t in edges_of(f) if not exempt(f, t)}

# Tarjan
idx, low, st, on, comps, c = {}, {}, [], set(), [], [0]


def sc(v):
    idx[v] = low[v] = c[0]
    c[0] += 1
    st.append(v)
    on.add(v)
    for w in G[v]:
        if w not in idx:
            sc(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(comp)


sys.setrecursionlimit(10000)
for v in sorted(G):
    if v not in idx:
        sc(v)

if "--edges" in sys.argv:
    for f in sorted(G):
        print(f, "->", ", ".join(sorted(G[f])))
# The layers, bottom (0) to top, as docs/architecture.md draws them. Within a layer any
# acyclic import is fine; an import of a higher layer is reported.
LAYERS = [
    ("domain", ["model/", "error.rs", "auth/jwt.rs", "sse/frame.rs", "metrics.rs", "shutdown.rs", "request_id.rs", "pem.rs"]),
    ("config", ["config.rs"]),
    ("backends", ["store/", "broker/", "hub/", "redis_conn/"]),
    ("services", ["publish.rs", "ingest/", "retention.rs", "due.rs", "push/", "upstream.rs"]),
    ("state", ["state.rs"]),
    ("HTTP", ["routes/", "auth/", "sse/", "forwarded.rs", "connect_limit.rs", "send_timeout.rs"]),
    ("server", ["server/"]),
    ("CLI", ["cli/", "lib.rs"]),
]


def layer(f):
    for i, (_, members) in enumerate(LAYERS):
        if f in members:
            return i
    for i, (_, members) in enumerate(LAYERS):
        if any(m.endswith("/") and f.startswith(m) for m in members):
            return i
    return None


upward = []
for f in sorted(G):
    if layer(f) is None:
        upward.append(f"{f}: in no layer")
        continue
    for t in sorted(G[f]):
        if layer(t) > layer(f):
            upward.append(f"{f} ({LAYERS[layer(f)][0]}) -> {t} ({LAYERS[layer(t)][0]})")

cycles = [sorted(x) for x in comps if len(x) > 1]
print(f"{len(G)} files, {sum(len(v) for v in G.values())} edges")
for u in upward:
    print("upward:", u)
if not upward:
    print("no upward import")
if not cycles:
    print("no cycle")
    sys.exit(1 if upward else 0)
for comp in cycles:
    print(f"cycle of {len(comp)} files: {', '.join(comp)}")
    s = set(comp)
    for f in comp:
        print(f"  {f} -> {', '.join(sorted(G[f] & s))}")
sys.exit(1)
