"""The Dockerfile checks: bases pinned by digest, EXPOSE against the manifests' ports, and the
final stage's OCI labels. Each returns a list of problems, empty when all is well. One Dockerfile
serves every service (ARG SERVICE): instantiate() evaluates it for one service's build args, and
the per-service checks run on that."""

from __future__ import annotations

import re
import shlex

from manifests import DIGEST, Doc, containers_of, workloads_of


def check_dockerfile_bases(dockerfile: str) -> list[str]:
    """Every FROM of an outside image is pinned by digest (FROMs naming earlier stages aside)."""
    problems: list[str] = []
    stages: set[str] = set()
    for match in re.finditer(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.MULTILINE | re.IGNORECASE):
        image, stage = match.group(1), match.group(2)
        if image not in stages and not DIGEST.search(image):
            problems.append(f"FROM {image} is not pinned by digest")
        if stage:
            stages.add(stage)
    return problems


def dockerfile_exposed(dockerfile: str) -> tuple[set[int], list[str]]:
    """The port numbers EXPOSEd, and what an EXPOSE names that is no number (a build ARG that
    was given no value, say)."""
    words = [word.split("/")[0] for line in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.MULTILINE)
             for word in line.split()]
    return {int(w) for w in words if w.isdigit()}, [w for w in words if not w.isdigit()]


def check_exposed_ports(dockerfile: str, docs: list[Doc], container_name: str) -> list[str]:
    """The Dockerfile EXPOSEs exactly the container's ports in the manifests."""
    exposed, unresolved = dockerfile_exposed(dockerfile)
    problems = [f"{container_name}: the Dockerfile EXPOSEs {word}, which is no port number" for word in unresolved]
    declared = {p["containerPort"] for _, pod in workloads_of(docs) for c in containers_of(pod)
                if c["name"] == container_name for p in c.get("ports", [])}
    if exposed != declared:
        problems.append(f"{container_name}: the Dockerfile EXPOSEs {sorted(exposed)}, the manifests declare "
                        f"{sorted(declared)}")
    return problems


def instantiate(dockerfile: str, build_args: dict[str, str]) -> str:
    """The Dockerfile as `docker build --build-arg NAME=VALUE …` evaluates it: each `${NAME}` or
    `$NAME` of a build arg replaced by its value where an `ARG NAME` is in scope, as Docker scopes
    them (before the first FROM: in FROM lines only; in a stage: after the stage's own ARG line).
    Any other reference, and every comment, stays as written, so a stage that forgot its ARG
    shows the literal reference to the checks."""
    global_scope: set[str] = set()
    stage_scope: set[str] | None = None
    lines = []
    for line in dockerfile.splitlines():
        stripped = line.lstrip()
        word = stripped.split(None, 1)[0].upper() if stripped and not stripped.startswith("#") else ""
        if word == "FROM":
            stage_scope = set()
            line = _substitute(line, build_args, global_scope)
        elif stage_scope is not None and not stripped.startswith("#"):
            line = _substitute(line, build_args, stage_scope)
        if word == "ARG":
            name = stripped.split(None, 1)[1].split("=", 1)[0].strip()
            (global_scope if stage_scope is None else stage_scope).add(name)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _substitute(line: str, build_args: dict[str, str], scope: set[str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return build_args[name] if name in scope and name in build_args else match.group(0)
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, line)


OCI_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version",
              "org.opencontainers.image.title", "org.opencontainers.image.licenses")


def _final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")))
    instructions = [tuple(line.strip().split(None, 1)) + ("",) for line in joined.splitlines() if line.strip()]
    stage: list[tuple[str, str]] = []
    for instruction in instructions:
        if instruction[0].upper() == "FROM":
            stage = []
        stage.append((instruction[0].upper(), instruction[1]))
    return stage


def dockerfile_labels(dockerfile: str) -> tuple[dict[str, str], dict[str, str]]:
    """The final stage's LABELs and its ARG defaults (quotes removed, nothing substituted)."""
    labels: dict[str, str] = {}
    args: dict[str, str] = {}
    for instruction, arguments in _final_stage(dockerfile):
        if instruction == "LABEL":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                labels[key] = value
        elif instruction == "ARG":
            name, _, default = arguments.partition("=")
            args[name.strip()] = shlex.split(default)[0] if default else ""
    return labels, args


def check_oci_labels(dockerfile: str, binary: str, workspace: Doc) -> list[str]:
    """The image carries the OCI labels: its title is the binary, its licence the workspace's,
    its source an https URL, and its version `${VERSION}`, a build ARG whose default is the
    workspace version (`[workspace.package]` of Cargo.toml)."""
    labels, args = dockerfile_labels(dockerfile)
    problems = [f"{binary}: the final stage has no LABEL {key}" for key in OCI_LABELS if key not in labels]
    expected = {"org.opencontainers.image.title": binary,
                "org.opencontainers.image.licenses": workspace["license"],
                "org.opencontainers.image.version": "${VERSION}"}
    for key, value in expected.items():
        if key in labels and labels[key] != value:
            problems.append(f"{binary}: LABEL {key}={labels[key]}, expected {value}")
    source = labels.get("org.opencontainers.image.source", "")
    if source and not source.startswith("https://"):
        problems.append(f"{binary}: LABEL org.opencontainers.image.source={source} is no https URL")
    if args.get("VERSION") != workspace["version"]:
        problems.append(f"{binary}: ARG VERSION defaults to {args.get('VERSION')}, the workspace version is "
                        f"{workspace['version']}")
    return problems
