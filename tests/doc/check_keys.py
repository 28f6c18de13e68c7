#!/usr/bin/python3
"""Every configuration key is documented in man/switchyard.conf.5.

The keys are taken from the config module's own tables: every
`static const char *const NAME_KEYS[] = {...}` array and every
`static const struct ... NAME_TABLE[] = {{"key", ...}, ...}` array in
src/config.c. TABLE_PATHS below says which group each table checks, so each
key gets its full dotted path (HEALTH_KEYS' "rise" is upstreams.health.rise).

A key is documented when the man page has a `.TP` entry whose tag line is
exactly `.B <full.path>`: a word in prose does not count.

Also checked:
  - every key used in etc/switchyard.conf, commented-out examples included
    (`# key = value;`, `# health = { ... };`, a commented-out route), by its
    full path;
  - every documented key is known to src/config.c (no stale entries) and has
    one entry only;
  - every table that check_keys() is called with was found, and every table
    found has a path here (a new table cannot slip past the check).

Exit 0 when all hold; else 1, naming each problem.
"""
import argparse
import re
import sys

# Which group each key table of src/config.c checks ("" = the top level).
TABLE_PATHS = {
    "ROOT_KEYS": "",
    "LISTEN_KEYS": "listen",
    "LISTEN_TLS_KEYS": "listen.tls",
    "TLS_CERT_KEYS": "listen.tls.certificates",
    "TIMEOUT_KEYS": "timeouts",
    "TIMEOUT_TABLE": "timeouts",
    "LIMIT_KEYS": "limits",
    "LIMIT_TABLE": "limits",
    "H2_KEYS": "h2",
    "H2_TABLE": "h2",
    "UPSTREAM_KEYS": "upstreams",
    "SERVER_KEYS": "upstreams.servers",
    "UPSTREAM_TLS_KEYS": "upstreams.tls",
    "HEALTH_KEYS": "upstreams.health",
    "ROUTE_KEYS": "routes",
    "TERMINATE_KEYS": "routes",
    "TUNNEL_KEYS": "tunnel",
    "ADMIN_KEYS": "admin",
}

KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
PATH_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


def fail_usage(msg):
    print(f"check_keys: {msg}", file=sys.stderr)
    sys.exit(2)


# ---- src/config.c ---------------------------------------------------------

def strip_c_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group(0)), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def code_keys(path):
    """{table: [keys]} from src/config.c, and the tables check_keys() uses."""
    text = strip_c_comments(open(path, encoding="utf-8").read())
    tables = {}
    for m in re.finditer(
        r"static\s+const\s+char\s*\*\s*const\s+([A-Z][A-Z0-9_]*_KEYS)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
        text,
        re.S,
    ):
        keys = re.findall(r'"([^"\\]*)"', m.group(2))
        if not re.search(r"\bNULL\s*$", m.group(2).strip().rstrip(",")):
            fail_usage(f"{path}: {m.group(1)} does not end with NULL")
        tables[m.group(1)] = keys
    for m in re.finditer(
        r"static\s+const\s+struct\s+\w+\s+([A-Z][A-Z0-9_]*_TABLE)\s*\[\s*\]\s*=\s*\{(.*?)\n\}\s*;",
        text,
        re.S,
    ):
        tables[m.group(1)] = re.findall(r'\{\s*"([^"\\]*)"', m.group(2))
    used = set(re.findall(r"\bcheck_keys\s*\([^;]*?,\s*([A-Z][A-Z0-9_]*)\s*\)", text))
    return tables, used


# ---- man/switchyard.conf.5 --------------------------------------------------

def documented_keys(path):
    """{full.path: line} of the `.TP` / `.B full.path` entries, and duplicates."""
    lines = open(path, encoding="utf-8").read().split("\n")
    found, dups = {}, []
    for i, line in enumerate(lines[:-1]):
        if line.strip() != ".TP":
            continue
        m = re.match(r"^\.B\s+(\S+)\s*$", lines[i + 1])
        if not m or not PATH_RE.match(m.group(1)):
            continue
        key = m.group(1)
        if key in found:
            dups.append((key, i + 2))
        found.setdefault(key, i + 2)
    return found, dups


# ---- etc/switchyard.conf ------------------------------------------------------
#
# A small libconfig reader that only tracks where each setting is: groups add
# their name to the path, lists of groups do not (every entry of `upstreams`
# is "upstreams"), arrays and scalars are skipped. Code is read as code;
# a comment is read as code too when it parses as complete settings (or goes
# on with a commented-out group left open), so `# retries = 2;    # note`
# counts and `# proxy_protocol = "v1" | "v2" sends ...` (prose) does not.

TOKEN_RE = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<name>[A-Za-z*][-A-Za-z0-9_*]*)'
    r"|(?P<num>[-+]?[0-9][0-9A-Za-z.+-]*)|(?P<punct>[=:;,{}()\[\]]))"
)


class ParseError(Exception):
    pass


def split_comment(line):
    """(code, comment) with the first # outside a string starting the comment."""
    in_str = esc = False
    for i, c in enumerate(line):
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "#" or line.startswith("//", i):
            return line[:i], line[i:].lstrip("#/")
    return line, None


def tokenize(text):
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"unexpected {text[pos:].strip()[:20]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class Reader:
    """State: a stack of (kind, path) frames, kind 'group' or 'list'."""

    def __init__(self):
        self.stack = [("group", "")]
        self.state = "key"  # key | eq | value | after
        self.pending = None  # the key waiting for its value
        self.array = False
        self.found = []  # (path, line)

    def copy(self):
        r = Reader()
        r.stack, r.state, r.pending = list(self.stack), self.state, self.pending
        r.array, r.found = self.array, list(self.found)
        return r

    def feed(self, toks, line):
        for kind, val in toks:
            self.step(kind, val, line)

    def step(self, kind, val, line):
        top_kind, top_path = self.stack[-1]
        if self.array:  # [ "a", "b" ]: skipped up to ]
            if val == "]" and kind == "punct":
                self.array, self.state = False, "after"
            return
        if self.state == "key":
            if top_kind == "list":
                if val == "{":
                    self.stack.append(("group", top_path))
                elif val == ")":
                    self.stack.pop()
                    self.state = "after"
                elif val != ",":
                    raise ParseError(f"list entry {val!r} is not a group")
                return
            if kind == "name" and KEY_RE.match(val):
                self.pending = f"{top_path}.{val}" if top_path else val
                self.found.append((self.pending, line))
                self.state = "eq"
            elif val == "}" and len(self.stack) > 1:
                self.stack.pop()
                self.state = "after"
            elif val not in (";", ","):
                raise ParseError(f"expected a setting, got {val!r}")
        elif self.state == "eq":
            if val not in ("=", ":"):
                raise ParseError(f"expected = after {self.pending}")
            self.state = "value"
        elif self.state == "value":
            if val == "{":
                self.stack.append(("group", self.pending))
                self.state = "key"
            elif val == "(":
                self.stack.append(("list", self.pending))
                self.state = "key"
            elif val == "[":
                self.array = True
            elif kind in ("str", "num") or val in ("true", "false"):
                self.state = "after"
            else:
                raise ParseError(f"bad value {val!r} for {self.pending}")
        elif self.state == "after":
            if kind == "str" and top_kind == "group":  # "a" "b": one string
                return
            self.state = "key"
            if val not in (";", ","):
                self.step(kind, val, line)

    def at_rest(self):
        """After a complete statement: what a commented-out line must end in."""
        return not self.array and self.state == "key"


def example_keys(path):
    """[(full.path, line)] of every setting of the example, commented or not."""
    r = Reader()
    open_comment = 0  # depth a commented-out group left open
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        code, comment = split_comment(raw.rstrip("\n"))
        try:
            r.feed(tokenize(code), n)
        except ParseError as e:
            fail_usage(f"{path}:{n}: cannot follow the file: {e}")
        while comment is not None:
            text, inner = split_comment(comment)
            text = text.strip()
            if not text:  # "#   # require_subprotocol = true;": look inside
                comment = inner
                continue
            trial = r.copy()
            try:
                trial.feed(tokenize(text), n)
            except ParseError:
                break  # prose
            depth = len(trial.stack) - len(r.stack)
            if trial.at_rest() or open_comment or depth > 0:
                open_comment = max(0, open_comment + depth)
                r = trial
            break
    if len(r.stack) != 1 or not r.at_rest():
        fail_usage(f"{path}: groups or lists left open at the end")
    return r.found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="src/config.c")
    ap.add_argument("--man", default="man/switchyard.conf.5")
    ap.add_argument("--example", default="etc/switchyard.conf")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every key")
    args = ap.parse_args()

    problems = []
    tables, used = code_keys(args.source)
    if "ROOT_KEYS" not in tables or len(tables) < 5:
        fail_usage(f"{args.source}: found only {sorted(tables)}: has the table syntax changed?")
    for t in sorted(used - set(tables)):
        problems.append(f"{args.source}: check_keys() uses {t}, which this test cannot read")
    for t in sorted(set(tables) - set(TABLE_PATHS)):
        problems.append(f"{args.source}: new key table {t}: add its group to TABLE_PATHS in {sys.argv[0]}")

    code = {}  # full.path -> table
    for t, keys in tables.items():
        prefix = TABLE_PATHS.get(t)
        if prefix is None:
            continue
        for k in keys:
            code.setdefault(f"{prefix}.{k}" if prefix else k, t)

    doc, dups = documented_keys(args.man)
    for key, line in dups:
        problems.append(f"{args.man}:{line}: '{key}' is documented twice")

    missing = sorted(k for k in code if k not in doc)
    for k in missing:
        problems.append(f"{args.man}: '{k}' ({code[k]} in {args.source}) is not documented "
                        f"(add a .TP entry with the tag line '.B {k}')")
    for k in sorted(set(doc) - set(code)):
        problems.append(f"{args.man}:{doc[k]}: '{k}' is documented but {args.source} has no such key")

    example = example_keys(args.example)
    ex_missing = 0
    for k, line in example:
        if k not in doc:
            ex_missing += 1
            problems.append(f"{args.example}:{line}: '{k}' is not documented in {args.man}")
        if k not in code:
            problems.append(f"{args.example}:{line}: '{k}' is not a key {args.source} knows")

    if args.verbose:
        for k in sorted(code):
            print(f"  {k:40} {code[k]:18} {'ok' if k in doc else 'MISSING'}")
    print(f"keys: {len(code) - len(missing)} documented, {len(missing)} missing "
          f"({len(tables)} tables in {args.source})")
    print(f"{args.example}: {len(set(k for k, _ in example))} keys, {ex_missing} undocumented")
    sys.stdout.flush()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
