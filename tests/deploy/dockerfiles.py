"""The Dockerfile checks: bases pinned by digest, EXPOSE against the manifests' ports, and the
final stage's OCI labels. Each returns a list of problems, empty when all is well."""

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


def dockerfile_exposed(dockerfile: str) -> set[int]:
    return {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.MULTILINE)
            for p in line.split()}


def check_exposed_ports(dockerfile: str, docs: list[Doc], container_name: str) -> list[str]:
    """The Dockerfile EXPOSEs exactly the container's ports in the manifests."""
    exposed = dockerfile_exposed(dockerfile)
    declared = {p["containerPort"] for _, pod in workloads_of(docs) for c in containers_of(pod)
                if c["name"] == container_name for p in c.get("ports", [])}
    if exposed != declared:
        return [f"{container_name}: the Dockerfile EXPOSEs {sorted(exposed)}, the manifests declare {sorted(declared)}"]
    return []


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
