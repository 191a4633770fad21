#!/usr/bin/env python3
"""Extract the shell steps of a GitHub Actions workflow file, so that a test runs them exactly.

    workflow-steps.py WORKFLOW OUTDIR

writes, for the workflow's one job:
    OUTDIR/env            the job's `env:` entries, one NAME=VALUE a line (values unquoted)
    OUTDIR/NN.sh          each step's `run:` block, NN counting from 01
    OUTDIR/NN.name        its `name:`
    OUTDIR/NN.always      present when the step has `if: always()`

The workflow must be of the plain shape examples/github-actions.yml has: one job, an `env:`
mapping of plain scalars, `shell: bash` (which GitHub runs as `bash --noprofile --norc -eo
pipefail FILE`, as the test does), and steps that are all `run: |` blocks (no `uses:`, no `${{ }}`
expressions, which only GitHub could evaluate). Anything else is an error, so the test can never
run less than the file says.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def fail(line_no: int, message: str) -> None:
    sys.exit(f"workflow-steps: line {line_no}: {message}")


def scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse(lines: list[str]):
    env: dict[str, str] = {}
    steps: list[dict] = []
    shell = None
    section = None  # "env" or "steps" (of the job), or None
    section_indent = 0
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if "${{" in raw:
            fail(i, "a ${{ }} expression: only GitHub can evaluate it")
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        text = raw.strip()
        if section and indent <= section_indent and not text.startswith("- "):
            section = None
        if text.startswith("shell:"):
            shell = scalar(text.partition(":")[2])
            if shell != "bash":
                fail(i, f"shell {shell}: the test runs steps as `shell: bash` does")
            continue
        if text in ("env:", "steps:") and indent > 0:
            section, section_indent = text[:-1], indent
            continue
        if section == "env":
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):\s*(.*)", text)
            if not match:
                fail(i, f"not a plain env entry: {text}")
            env[match[1]] = scalar(match[2])
        elif section == "steps":
            if text.startswith("- "):
                steps.append({})
                text = text[2:].strip()
                indent += 2
            if not steps:
                fail(i, "a step key before the first step")
            key, _, value = text.partition(":")
            value = value.strip()
            if key == "uses":
                fail(i, f"`uses: {value}`: only shell steps can run in the test")
            if key == "run":
                if value not in ("|", "|-"):
                    fail(i, "write `run:` as a block (`run: |`)")
                block: list[str] = []
                block_indent = None
                while i < len(lines):
                    line = lines[i]
                    stripped = line.strip()
                    line_indent = len(line) - len(line.lstrip(" "))
                    if stripped and line_indent <= indent:
                        break
                    if "${{" in line:
                        fail(i + 1, "a ${{ }} expression: only GitHub can evaluate it")
                    if stripped and block_indent is None:
                        block_indent = line_indent
                    block.append(line[block_indent or 0 :] if stripped else "")
                    i += 1
                steps[-1]["run"] = "\n".join(block).rstrip("\n") + "\n"
            elif key == "name":
                steps[-1]["name"] = scalar(value)
            elif key == "if":
                if scalar(value) != "always()":
                    fail(i, f"only `if: always()` is understood, not {value}")
                steps[-1]["always"] = True
            else:
                fail(i, f"a step key the test cannot honour: {key}")
    if shell is None:
        sys.exit("workflow-steps: no `defaults: run: shell: bash` (the test runs steps as bash)")
    for number, step in enumerate(steps, 1):
        if "run" not in step:
            sys.exit(f"workflow-steps: step {number} has no `run:`")
    return env, steps


def main() -> None:
    workflow, out = Path(sys.argv[1]), Path(sys.argv[2])
    env, steps = parse(workflow.read_text().splitlines())
    if not steps:
        sys.exit(f"workflow-steps: no steps in {workflow}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "env").write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    for number, step in enumerate(steps, 1):
        (out / f"{number:02}.sh").write_text(step["run"])
        (out / f"{number:02}.name").write_text(step.get("name", f"step {number}") + "\n")
        if step.get("always"):
            (out / f"{number:02}.always").write_text("")
    print(f"workflow-steps: {len(steps)} steps, env {', '.join(env)}")


if __name__ == "__main__":
    main()
