"""The Dockerfiles: lint clean, bases pinned by digest, ports and toolchain agreeing with the
rest of the repository."""

from __future__ import annotations

import re
import tomllib

import pytest

import clihelp
import dockerfiles
import render
from outside_tools import REPO_ROOT, require_tool, run

DOCKERFILES = {name: REPO_ROOT / name / "Dockerfile" for name in clihelp.BINARIES}


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), *map(str, DOCKERFILES.values())])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_every_base_image_is_pinned_by_digest(binary: str) -> None:
    text = DOCKERFILES[binary].read_text()
    assert dockerfiles.check_dockerfile_bases(text) == []
    unpinned = re.sub(r"@sha256:[0-9a-f]{64}", "", text, count=1)
    assert dockerfiles.check_dockerfile_bases(unpinned) != []


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_dockerfile_exposes_the_ports_the_manifests_declare(binary: str, docs) -> None:
    text = DOCKERFILES[binary].read_text()
    assert dockerfiles.check_exposed_ports(text, docs["base"], binary) == []
    broken = re.sub(r"^EXPOSE .*$", "EXPOSE 1234", text, flags=re.MULTILINE)
    assert dockerfiles.check_exposed_ports(broken, docs["base"], binary) != []


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_dockerfile_builds_and_runs_what_it_says(binary: str) -> None:
    text = DOCKERFILES[binary].read_text()
    assert f"cargo build --release --locked --package {binary} --bin {binary}" in text
    assert re.search(r"^FROM gcr\.io/distroless/(cc|static)-debian\d+:nonroot@", text, re.MULTILINE)
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE), "uid must match runAsUser in kustomize/base"
    assert f'ENTRYPOINT ["/usr/local/bin/{binary}"]' in text


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_builder_rust_is_at_least_the_workspace_rust_version(binary: str) -> None:
    rust_version = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    tags = re.findall(r"^FROM rust:([\d.]+)", DOCKERFILES[binary].read_text(), re.MULTILINE)
    assert tags and all(_version(tag) >= _version(rust_version) for tag in tags), (tags, rust_version)


def test_both_dockerfiles_use_the_same_base_images() -> None:
    # One recipe for two binaries: a digest bumped in one file only is a mistake.
    recommendations, marketplace = (
        re.findall(r"^FROM (\S+@sha256:\S+)", DOCKERFILES[b].read_text(), re.MULTILINE) for b in clihelp.BINARIES)
    assert recommendations == marketplace


def test_the_manifests_run_as_the_images_user(docs) -> None:
    for doc in docs["prod"]:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsUser"] == 65532
            assert all(c["securityContext"]["runAsUser"] == 65532 for c in pod["containers"])


def test_the_docker_build_context_leaves_out_what_cargo_does_not_read() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored
    assert render.KUSTOMIZE.name + "/" in ignored


def _workspace_package() -> dict:
    return tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_image_carries_the_oci_labels(binary: str) -> None:
    text = DOCKERFILES[binary].read_text()
    workspace = _workspace_package()
    assert dockerfiles.check_oci_labels(text, binary, workspace) == []
    labels, _ = dockerfiles.dockerfile_labels(text)
    assert set(dockerfiles.OCI_LABELS) <= set(labels)
    # Broken copies: a label left out, a title naming the other image.
    without_source = re.sub(r'^\s*org\.opencontainers\.image\.source=\S+ \\\n', "", text, flags=re.MULTILINE)
    assert without_source != text
    assert dockerfiles.check_oci_labels(without_source, binary, workspace) == [
        f"{binary}: the final stage has no LABEL org.opencontainers.image.source"]
    other = "marketplace" if binary == "recommendations" else "recommendations"
    retitled = text.replace(f'image.title="{binary}"', f'image.title="{other}"')
    assert dockerfiles.check_oci_labels(retitled, binary, workspace) == [
        f"{binary}: LABEL org.opencontainers.image.title={other}, expected {binary}"]


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_version_label_defaults_to_the_workspace_version(binary: str) -> None:
    text = DOCKERFILES[binary].read_text()
    workspace = _workspace_package()
    assert dockerfiles.dockerfile_labels(text)[1]["VERSION"] == workspace["version"]
    stale = re.sub(r"^ARG VERSION=.*$", "ARG VERSION=0.0.1", text, flags=re.MULTILINE)
    assert dockerfiles.check_oci_labels(stale, binary, workspace) == [
        f"{binary}: ARG VERSION defaults to 0.0.1, the workspace version is {workspace['version']}"]
    # Declared before the final FROM, the ARG would not reach the LABEL.
    hoisted = "ARG VERSION=" + workspace["version"] + "\n" + re.sub(r"^ARG VERSION=.*\n", "", text, flags=re.MULTILINE)
    assert any("ARG VERSION defaults to None" in p for p in dockerfiles.check_oci_labels(hoisted, binary, workspace))


def test_hadolint_checks_the_label_values(tmp_path) -> None:
    hadolint = require_tool("hadolint")
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILES["recommendations"].read_text().replace(
        'licenses="Apache-2.0"', 'licenses="Apache 2"'))
    result = run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(broken)])
    assert result.returncode != 0 and "DL3054" in result.stdout, result.stdout
