"""The documentation against the runner and the tree, as test_getinfo_table.py holds getInfo's
table to the key: every long flag `usbip-runner --help` (or a subcommand's `--help`) prints, every
value it lists for a flag, and every control-socket verb `usbip-runner control --help` lists
must appear in README.md or docs/*.md; every verb listed must be one the running key accepts;
every relative link in the Markdown files must lead to a file (and heading) that exists; and
docs/layout.md must name every top-level directory and script.

The lists come from the binary, never from a copy here, so a flag or verb added to the code
and its --help without a line in the documentation fails this test."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, RUNNER, RunningKey, _refuse_stale_runner

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*DOCS, ROOT / "CHANGELOG.md", ROOT / "rp2040-runner" / "README.md"]
SUBCOMMANDS = ["control"]


def help_text(*args: str) -> str:
    _refuse_stale_runner()
    return subprocess.run(
        [str(RUNNER), *args, "--help"], capture_output=True, text=True, check=True
    ).stdout


def documentation() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def options(text: str) -> dict[str, list[str]]:
    """Each long flag clap defines in a --help text, with the values it lists for it (as
    `[possible values: a, b]`, or one `- a: ...` line each when the values are documented)."""
    flags: dict[str, list[str]] = {}
    flag = None
    for line in text.splitlines():
        defined = re.match(r"\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", line)
        if defined:
            flag = defined.group(1)
            flags[flag] = []
        values = re.search(r"\[possible values: ([^\]]+)\]", line)
        if values and flag:
            flags[flag] += [v.strip() for v in values.group(1).split(",")]
        described = re.match(r"\s+- ([a-z0-9-]+):", line)  # clap's list of documented values
        if described and flag:
            flags[flag].append(described.group(1))
    for builtin in ("--help", "--version"):
        flags.pop(builtin, None)
    return flags


def control_verbs(text: str) -> dict[str, list[str]]:
    """The verbs `control --help` lists (a line indented by two spaces starting with one), with
    the words given as `a|b|c` after it."""
    verbs: dict[str, list[str]] = {}
    for line in text.splitlines():
        listed = re.match(r"  ([a-z][a-z-]*)(?: ([a-z|-]+))?(?: |$)", line)
        if listed:
            verb, words = listed.groups()
            verbs.setdefault(verb, [])
            if words:
                verbs[verb] += [w for w in words.split("|") if w]
    return verbs


def fault_kinds(text: str) -> list[str]:
    """The kinds `fault KIND` lists on its line and the ones it wraps onto."""
    start = text.index("  fault KIND")
    block = text[start:].split("\n", 2)
    listed = " ".join(block[:2])
    return re.findall(r"\b([a-z]+(?:-[a-z]+)+|none)\b", listed)


def code_span_gives(words: list[str], spans: list[list[str]]) -> bool:
    """Whether a code span starts with the verb (and, if given, lists the word after it), as in
    `uv ok|fail|timeout [BUS]`."""
    verb, *word = words
    return any(span[0] == verb and (not word or word[0] in span[1:]) for span in spans)


def mentioned(flag: str, docs: str) -> bool:
    return re.search(re.escape(flag) + r"(?![a-z0-9-])", docs) is not None


def test_every_flag_in_help_is_documented():
    docs = documentation()
    texts = [help_text(), *(help_text(sub) for sub in SUBCOMMANDS)]
    flags = {flag: values for text in texts for flag, values in options(text).items()}
    assert len(flags) >= 20, f"--help lists too few flags to be read right: {sorted(flags)}"
    assert sum(map(len, flags.values())) >= 10, f"too few flag values read: {flags}"
    undocumented = [flag for flag in flags if not mentioned(flag, docs)]
    assert not undocumented, f"flags of --help in neither README.md nor docs/: {undocumented}"
    lines = docs.splitlines()
    missing = [
        f"{flag} {value}"
        for flag, values in flags.items()
        for value in values
        if not any(mentioned(flag, line) and re.search(rf"\b{re.escape(value)}\b", line) for line in lines)
    ]
    assert not missing, f"values of --help that no line of README.md or docs/ gives with their flag: {missing}"


def test_every_control_verb_in_help_is_documented():
    text = help_text("control")
    verbs = control_verbs(text)
    assert {"approve", "hold", "status", "uv", "fault", "credentials", "events"} <= set(verbs), verbs
    docs = documentation()
    words = [*verbs, *(f"{verb} {w}" for verb, ws in verbs.items() for w in ws)]
    words += [f"fault {kind}" for kind in fault_kinds(text)]
    assert len(fault_kinds(text)) >= 6, fault_kinds(text)
    prose = re.sub(r"```.*?```", "", docs, flags=re.S)
    spans = [re.split(r"[\s|\\]+", span.strip()) for span in re.findall(r"`([^`]+)`", prose)]
    undocumented = [w for w in words if not code_span_gives(w.split(" "), spans)]
    assert not undocumented, f"control verbs of --help in neither README.md nor docs/: {undocumented}"


def control(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        return sock.makefile().readline().strip()


@pytest.fixture
def control_socket(tmp_path):
    path = tmp_path / "control.sock"
    key = RunningKey("--ephemeral", "--presence", "control", "--uv", "builtin", "--control", str(path))
    yield path
    key.stop()


def test_every_control_verb_in_help_is_one_the_key_accepts(control_socket):
    """Help that lists a verb the runner does not know is drift too; a made-up verb shows what
    refusal looks like, so this cannot pass by reading nothing."""
    assert control(control_socket, "no-such-verb 1-1").startswith("error unknown command")
    verbs = control_verbs(help_text("control"))
    for verb, words in verbs.items():
        for word in words or [""]:
            line = f"{verb} {word} 1-1".replace("  ", " ")
            if verb == "uv" and word == "status" or verb == "status":
                line = f"{verb} {word}".strip()
            reply = control(control_socket, line)
            assert not reply.startswith("error unknown command"), f"{line!r}: {reply}"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_relative_links_resolve():
    broken = []
    for page in LINKED:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_layout_names_every_top_level_directory_and_script():
    """docs/layout.md's tree has a line for each top-level directory, and names every script."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    directories = [
        p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "target"
    ]
    scripts = [p.name for p in (ROOT / "scripts").glob("*.sh")]
    assert len(directories) >= 8 and len(scripts) >= 5, (directories, scripts)
    missing = [f"{d}/" for d in directories if not re.search(rf"^{re.escape(d)}/ ", layout, flags=re.M)]
    missing += [s for s in scripts if not re.search(rf"(?<![\w-]){re.escape(s)}", layout)]
    assert not missing, f"docs/layout.md does not name: {missing}"


def test_the_words_the_key_names_for_a_verb_are_in_help(control_socket):
    """The other way round, where the key says what it takes: a wrong word after `uv`,
    `presence` or `fault` gets the list of right ones, and each must be in `control --help`."""
    text = help_text("control")
    listed = control_verbs(text)
    listed["fault"] = fault_kinds(text)
    for verb in ("uv", "presence", "fault"):
        reply = control(control_socket, f"{verb} no-such-word 1-1")
        takes = re.match(rf"error {verb} takes (.+), not ", reply)
        assert takes, reply
        words = re.split(r", | or ", takes.group(1))
        assert len(words) >= 3, reply
        missing = [w for w in words if w not in listed[verb]]
        assert not missing, f"the key takes {verb} {missing}, control --help does not list them"


def test_readme_links_every_docs_file():
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"docs/ files the README does not link: {unlinked}"
