"""The README as a newcomer uses it: every shell block runs as printed, or says why it cannot.

    python3 .ci/readme.py block NAME     prints the block marked <!-- ci: NAME -->
    python3 .ci/readme.py check BUF      runs every block (BUF: a buf binary, for grpcurl lines)

Every ```sh block must follow a `<!-- ci: NAME -->` line naming one of the kinds below, so a
new block cannot go unchecked. `check`, from the repository root, on a machine where the test
command has run (.ci/run runs it after `cargo test`):
- starts the gateway with the `start` block and waits for its banner;
- runs the `prerequisites` block, then every other block in the README's order, each with
  `bash -euo pipefail -c` exactly as printed: grpcurl lines (`dev-examples`, `dev-watch`) go
  through `buf curl`, the same call with reflection (Watch, which streams until stopped, for
  5 s); each block's answer must say what the README says it answers;
- stops the gateway with Ctrl-C's signal: it must exit 0.
Blocks that need what this machine lacks (a container engine, a cluster) are named with the
reason and the check that covers them instead. It also checks that every link of the README and
of docs/ to a heading or a file leads somewhere.
"""

import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# What each block is and what its answer must show: (kind, expectation).
#   run: exit 0 and the text in the output; fails: a non-zero exit and the text in the output;
#   grpcurl: every line through buf curl; elsewhere: run by another step, named here.
KINDS = {
    "start": ("start", "Stop with Ctrl-C"),
    "test": ("elsewhere", ".ci/run runs it as the test command (cargo test)"),
    "prerequisites": ("run", ""),
    "dev-examples": ("grpcurl", ""),
    "buf-curl": ("run", "REFUND_STATUS_SUCCEEDED"),
    "quickstart-python": ("run", "REFUND_STATUS_SUCCEEDED"),
    "quickstart-node": ("run", "REFUND_STATUS_SUCCEEDED"),
    "quickstart-go": ("run", "REFUND_STATUS_SUCCEEDED"),
    "quickstart-java": ("run", "REFUND_STATUS_SUCCEEDED"),
    "invalid-request": ("fails", "(reason: INVALID_REQUEST)"),
    "dev-watch": ("grpcurl", ""),
    "install": ("run", "paygate 0."),
    "image": ("elsewhere", "no container engine runs here: .ci/image_build.py runs the "
              "Dockerfile's build command in the context .dockerignore leaves, and "
              "helm/check_pods.py starts that binary"),
    "helm-install": ("elsewhere", "no cluster here: helm/check_chart.py renders the command's "
                     "values and validates the manifests, helm/check_pods.py starts the binary on them"),
    "nats-consumer": ("elsewhere", "the dev command runs in the start check; the consumer runs "
                      "against a gateway relaying to a nats-server of its own in tests/polyglot.rs "
                      "(python_nats_consumer_reads_the_relayed_events), with the same nats-py"),
    "admin-list": ("run", "key(s)"),
    "admin-show": ("fails", "NotFound"),
    "admin-settle": ("fails", "NotFound"),
    "admin-audit": ("run", ""),
    "admin-kubernetes": ("elsewhere", "no cluster here: tests/admin.rs runs the same commands with "
                         "--address and --token-file against a gateway with an ops caller "
                         "(an_operator_settles_a_stuck_key_on_sqlite, _on_postgres)"),
    "settle": ("fails", "no such key"),
    "settle-happened": ("fails", "no such key"),
    "settle-kubernetes": ("elsewhere", "no cluster here: the same settle with --config runs in "
                          "tests/cli.rs (settle_reads_the_store_from_the_configuration_as_serve_does)"),
}


def blocks():
    """Every fenced block: (line, language, marker or None, text)."""
    lines = README.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            lang = m.group(1)
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = None
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mm = re.match(r"^<!-- ci: ([\w-]+) -->$", lines[k]) if k >= 0 else None
            if mm:
                marker = mm.group(1)
            out.append((i + 1, lang, marker, "\n".join(lines[i + 1:end])))
            i = end + 1
        else:
            i += 1
    return out


def block(name):
    found = [b for b in blocks() if b[2] == name]
    if len(found) != 1:
        sys.exit(f"README: {len(found)} blocks marked <!-- ci: {name} -->")
    return found[0][3]


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def check_links():
    """Every relative link of README.md and docs/*.md leads to a file, and its #anchor to a
    heading of that file."""
    bad = []
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}: no such file")
                continue
            if anchor:
                heads = {slug(h) for h in re.findall(r"(?m)^#+ (.+)$", file.read_text())}
                if anchor not in heads:
                    bad.append(f"{doc.relative_to(ROOT)}: {target}: no such heading")
    if bad:
        sys.exit("broken links:\n  " + "\n  ".join(bad))
    print("links: every link of README.md and docs/ leads to a file and heading")


def grpcurl_to_buf(line, buf):
    """A README grpcurl line as the same call through buf curl (reflection, no proto files)."""
    argv = shlex.split(line)
    assert argv[:2] == ["grpcurl", "-plaintext"] and argv[2] == "-d", line
    body, addr, method = argv[3], argv[4], argv[5]
    return [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", body,
            f"http://{addr}/{method}"]


def run_block(name, text, env):
    print(f"-- README block {name}:")
    print("   " + text.replace("\n", "\n   "))
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout


def check_toml():
    """Every TOML example of the README parses (its keys are the configuration's: the
    configuration tests and check-config read the same names)."""
    import tomllib
    n = 0
    for line, lang, _, text in blocks():
        if lang == "toml":
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                sys.exit(f"README.md:{line}: a TOML example that does not parse: {e}")
            n += 1
    print(f"TOML: {n} examples parse")


def check(buf):
    env = dict(os.environ)
    # `cargo install` puts paygate here; rustup's environment has it on PATH.
    env["PATH"] = f"{pathlib.Path.home() / '.cargo' / 'bin'}:{env['PATH']}"
    found = blocks()
    for line, lang, marker, text in found:
        if lang == "sh" and marker is None:
            sys.exit(f"README.md:{line}: a sh block without a <!-- ci: NAME --> marker")
        if marker is not None and lang == "sh" and marker not in KINDS:
            sys.exit(f"README.md:{line}: unknown marker {marker!r}: add it to .ci/readme.py")
    shell = [b for b in found if b[1] == "sh"]
    assert block("test") == "cargo test", block("test")

    code, out = run_block("prerequisites", block("prerequisites"), env)
    if code != 0:
        sys.exit(f"README block prerequisites failed ({code}):\n{out}")

    log = open(ROOT / "target" / "readme-dev.log", "w")
    print(f"-- README block start: {block('start')}")
    dev = subprocess.Popen(["bash", "-c", f"exec {block('start')}"], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        banner = ROOT / "target" / "readme-dev.log"
        for _ in range(3000):  # cargo may build first
            if "Stop with Ctrl-C" in banner.read_text() or dev.poll() is not None:
                break
            time.sleep(0.2)
        if "Stop with Ctrl-C" not in banner.read_text():
            sys.exit(f"the start block did not start:\n{banner.read_text()}")
        # The headings the banner sends a newcomer to exist.
        heads = set(re.findall(r"(?m)^#+ (.+)$", README.read_text()))
        named = re.findall(r'README: "([^"]+)"', banner.read_text())
        missing = [h for h in named if h not in heads]
        if not named or missing:
            sys.exit(f"the dev banner names README headings {named}; missing: {missing}")
        print(f"-- the dev banner's README headings exist: {named}")
        for line, lang, marker, text in shell:
            kind, want = KINDS[marker]
            if marker in ("start", "prerequisites"):
                continue
            if kind == "elsewhere":
                print(f"-- README block {marker} (README.md:{line}): not run here: {want}")
                continue
            if kind == "grpcurl":
                for call in text.splitlines():
                    argv = grpcurl_to_buf(call, buf)
                    streaming = call.endswith("EventService/Watch")
                    print(f"-- README {marker}: {call}")
                    try:
                        p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                           timeout=5 if streaming else 60)
                        code, out = p.returncode, p.stdout + p.stderr
                    except subprocess.TimeoutExpired as e:
                        code = 0
                        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                    print("   " + "\n   ".join(out.strip().splitlines()[:6]))
                    if code != 0:
                        sys.exit(f"README {marker}: {call}\nfailed ({code}):\n{out}")
                continue
            block_env = env
            if marker == "install" and os.environ.get("PAYGATE_README_TARGET_DIR"):
                # CI built this source for release a moment ago (the image's build): the
                # install reuses that build instead of making a second one.
                block_env = dict(env, CARGO_TARGET_DIR=os.environ["PAYGATE_README_TARGET_DIR"])
            code, out = run_block(marker, text, block_env)
            print("   -> " + "\n      ".join(out.strip().splitlines()[-4:]))
            if kind == "run" and code != 0:
                sys.exit(f"README block {marker} failed ({code}):\n{out}")
            if kind == "fails" and code == 0:
                sys.exit(f"README block {marker} succeeded, but the README says it fails:\n{out}")
            if want not in out:
                sys.exit(f"README block {marker}: the answer lacks {want!r}:\n{out}")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
        try:
            status = dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            sys.exit("the dev mode did not stop on Ctrl-C's signal")
    if status != 0:
        sys.exit(f"the dev mode exited {status} on Ctrl-C's signal")
    check_links()
    check_toml()
    print(f"README: {len(shell)} shell blocks: "
          f"{sum(1 for b in shell if KINDS[b[2]][0] != 'elsewhere')} run as printed, "
          f"{sum(1 for b in shell if KINDS[b[2]][0] == 'elsewhere')} covered by the steps named")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "block":
        print(block(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "links":
        check_links()
    else:
        sys.exit(__doc__)
