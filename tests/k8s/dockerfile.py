"""Reading k8s/image/Dockerfile: its stages and their instructions, so tests rehearse what the recipe says."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DOCKERFILE = REPOSITORY / "k8s" / "image" / "Dockerfile"
STEPS_COMMAND = "portal-image-steps"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def of(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    result = []
    for line in joined:
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    found: list[Stage] = []
    arguments: dict[str, str] = {}
    for keyword, rest in instructions(path.read_text()):
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in arguments.items():
                base = base.replace("${" + name + "}", value)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name=name, base=base))
        else:
            found[-1].instructions.append((keyword, rest))
    return found


def environment(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in stage.of("ENV"):
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def steps(stage: Stage) -> list[tuple[str, str]]:
    """(step, app dir) of each `RUN ... portal-image-steps STEP DIR`, in order."""
    found = []
    for line in stage.of("RUN"):
        words = shlex.split(line)
        if STEPS_COMMAND in words:
            index = words.index(STEPS_COMMAND)
            found.append((words[index + 1], words[index + 2]))
    return found


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources in the build context, destination) of each COPY from the context (not --from a stage)."""
    found = []
    for line in stage.of("COPY"):
        words = shlex.split(line)
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found
