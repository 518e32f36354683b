"""Entry point of the per-container ``PATH`` shims (see `launch.shim_scripts`).

``python -m swarmops.testbed.procnode.shim <context.json> <program> [args...]``
maps an image program called from a shell script to its local stand-in with the
same rules as a container's own command, then replaces itself with it. The
arguments come from a script whose text was already path-rewritten, so they are
not rewritten again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from swarmops.testbed.procnode.expansion import PathRewriter
from swarmops.testbed.procnode.images import LocalPrograms, ProgramNotFound, resolve_image
from swarmops.testbed.procnode.launch import Command, LaunchContext, local_command


def context_json(ctx: LaunchContext) -> str:
    programs = ctx.programs
    return json.dumps(
        {
            "image": ctx.profile.reference,
            "pod_ip": ctx.pod_ip,
            "run_dir": ctx.run_dir,
            "mounts": sorted(ctx.rewriter.mounts.items()),
            "programs": {name: getattr(programs, name) for name in programs.__dataclass_fields__},
        }
    )


def load_context(text: str) -> LaunchContext:
    raw: dict[str, Any] = json.loads(text)
    profile = resolve_image(raw["image"])
    if profile is None:
        raise ProgramNotFound(f"image {raw['image']!r} is not runnable")
    return LaunchContext(
        profile=profile,
        programs=LocalPrograms(**raw["programs"]),
        pod_ip=raw["pod_ip"],
        rewriter=PathRewriter((m, local) for m, local in raw["mounts"]),
        run_dir=raw["run_dir"],
    )


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def write_files(command: Command) -> None:
    for path, content, mode in command.files:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: shim <context.json> <program> [args...]", file=sys.stderr)
        return 2
    context_file, *command_argv = argv
    try:
        ctx = load_context(Path(context_file).read_text())
        command = local_command(ctx, command_argv, _read)
    except (OSError, ValueError, ProgramNotFound) as error:
        print(f"process node: {error}", file=sys.stderr)
        return 127
    write_files(command)
    os.execv(command.argv[0], list(command.argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
