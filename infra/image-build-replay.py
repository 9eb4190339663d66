#!/usr/bin/env python3
"""Replays the build stage of infra/Dockerfile without a Docker engine, then starts the binary.

    infra/image-build-replay.py [--keep-target]

1. The build context is what `docker build .` sends: every file under the repository root
   except what .dockerignore excludes (Docker's rules: patterns relative to the root, `*`, `?`,
   `**`, `!` re-includes, the last matching line wins, a directory's exclusion covers its files).
2. A fresh directory stands for the build stage's filesystem. The stage's WORKDIR, COPY (from
   the context), ENV and RUN instructions are carried out in it, in order; RUN runs with bash
   in the mapped WORKDIR. An instruction the replay does not understand fails it.
3. The path the final stage copies `--from=build` must exist afterwards; that binary is started
   with a minimal configuration, and must answer GET /healthz with 200.

The Cargo target directory of the replay is kept between runs under target/image-replay
(sources are always copied afresh), so a second run only rebuilds what changed.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
WORK = ROOT / "target" / "image-replay"


def fail(message: str) -> None:
    sys.exit(f"image-build-replay: {message}")


def ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    path = ROOT / ".dockerignore"
    if not path.exists():
        return rules
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = os.path.normpath(pattern.strip("/")).replace(os.sep, "/")
        rules.append((negate, pattern))
    return rules


def pattern_matches(pattern: str, path: str) -> bool:
    """Docker's matcher (moby/patternmatcher): `*` and `?` within one path segment, `[...]`
    classes, `**` any number of segments; a pattern naming a directory also covers everything
    below it."""
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            regex += ".*"
            i += 2
            continue
        if c == "*":
            regex += "[^/]*"
        elif c == "?":
            regex += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                regex += re.escape(c)
            else:
                regex += "[" + pattern[i + 1:end].replace("\\", "\\\\") + "]"
                i = end
        else:
            regex += re.escape(c)
        i += 1
    return re.fullmatch(f"{regex}(?:/.*)?", path, re.S) is not None


def excluded(path: str, rules: list[tuple[bool, str]]) -> bool:
    result = False
    for negate, pattern in rules:
        if pattern_matches(pattern, path):
            result = not negate
    return result


def context_files() -> list[str]:
    rules = ignore_rules()
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        # Prune excluded directories unless a later `!` rule could re-include something inside.
        keep = []
        for d in dirnames:
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if excluded(rel, rules) and not any(neg for neg, _ in rules):
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            if not excluded(rel, rules):
                files.append(rel)
    return sorted(files)


def build_stage() -> tuple[list[tuple[str, str]], str]:
    """The instructions of the stage named `build`, and the path the last stage copies from it."""
    lines = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            name = rest.split()[-1] if " AS " in rest.upper() else ""
            stages.append((name.lower(), []))
        elif stages:
            stages[-1][1].append((keyword, rest.strip()))
    build = next((instr for name, instr in stages if name == "build"), None)
    if build is None:
        fail("infra/Dockerfile has no stage named 'build'")
    artifact = None
    for keyword, rest in stages[-1][1]:
        if keyword == "COPY" and rest.startswith("--from=build"):
            artifact = shlex.split(rest)[1]
    if artifact is None:
        fail("the final stage copies nothing --from=build")
    return build, artifact


def replay(files: list[str], instructions: list[tuple[str, str]], fs: pathlib.Path) -> dict:
    workdir = "/"
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(WORK / "cargo-target")
    for keyword, rest in instructions:
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, rest)
            (fs / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            key, _, value = rest.partition("=")
            env[key.strip()] = value.strip().strip('"')
        elif keyword == "COPY":
            args = shlex.split(rest)
            if any(a.startswith("--") for a in args):
                fail(f"COPY flags are not replayed: {rest}")
            *sources, dest = args
            dest_dir = fs / os.path.join(workdir, dest).lstrip("/")
            for source in sources:
                source = os.path.normpath(source)
                chosen = [f for f in files if source == "." or f == source or f.startswith(source + "/")]
                if not chosen:
                    fail(f"COPY {source}: not in the build context")
                for f in chosen:
                    rel = f if source == "." else os.path.relpath(f, os.path.dirname(source) or ".")
                    target = dest_dir / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f, target)
        elif keyword == "RUN":
            cwd = fs / workdir.lstrip("/")
            print(f"replay: RUN {rest}", flush=True)
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", rest], cwd=cwd, env=env)
            if done.returncode != 0:
                fail(f"RUN failed with status {done.returncode}: {rest}")
        elif keyword in ("ARG", "LABEL"):
            continue
        else:
            fail(f"instruction {keyword} is not replayed")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary: pathlib.Path) -> None:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(port),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_TOPIC": "replay",
        "OIDC_DISABLED": "true",
    }
    process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            if process.poll() is not None:
                fail(f"the binary exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        print(f"replay: the image's binary serves /healthz 200 on port {port}")
                        return
            except OSError:
                time.sleep(0.05)
        fail("the binary did not answer /healthz within 10 s")
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    files = context_files()
    for required in ("Cargo.toml", "Cargo.lock", "infra/Dockerfile"):
        if required not in files:
            fail(f"{required} is not in the build context")
    print(f"replay: build context holds {len(files)} files")
    instructions, artifact = build_stage()
    fs = WORK / "fs"
    shutil.rmtree(fs, ignore_errors=True)
    fs.mkdir(parents=True)
    replay(files, instructions, fs)
    # The artifact path lives in the stage's filesystem; the cargo target dir is redirected to
    # the kept cache, so map <WORKDIR>/target to it.
    workdir = next((rest for kw, rest in instructions if kw == "WORKDIR"), "/")
    rel = os.path.relpath(artifact, workdir)
    if rel.startswith("target/"):
        binary = WORK / "cargo-target" / rel.removeprefix("target/")
    else:
        binary = fs / artifact.lstrip("/")
    if not binary.is_file():
        fail(f"the final stage copies {artifact}, which the build stage did not produce")
    start(binary)


if __name__ == "__main__":
    main()
