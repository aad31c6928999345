"""The Dockerfile, one for every service: lint clean, bases pinned by digest, and, evaluated with
each service's build args (compose.yaml's), ports, labels and toolchain agreeing with the rest of
the repository."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import yaml

import clihelp
import dockerfiles
import render
from outside_tools import REPO_ROOT, require_tool, run

DOCKERFILE = REPO_ROOT / "Dockerfile"


def build_args(binary: str) -> dict[str, str]:
    """The build args compose.yaml builds `binary`'s image with."""
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return {name: str(value) for name, value in compose["services"][binary]["build"]["args"].items()}


def dockerfile(binary: str) -> str:
    """The Dockerfile as `docker build` evaluates it for `binary`."""
    return dockerfiles.instantiate(DOCKERFILE.read_text(), build_args(binary))


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_dockerfile_builds_every_service() -> None:
    git = require_tool("git")
    tracked = run([git, "ls-files", "*Dockerfile*"]).stdout.split()
    assert tracked == ["Dockerfile"]
    for binary in clihelp.BINARIES:
        assert build_args(binary)["SERVICE"] == binary


def test_every_base_image_is_pinned_by_digest() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfiles.check_dockerfile_bases(text) == []
    unpinned = re.sub(r"@sha256:[0-9a-f]{64}", "", text, count=1)
    assert dockerfiles.check_dockerfile_bases(unpinned) != []


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_dockerfile_exposes_the_ports_the_manifests_declare(binary: str, docs) -> None:
    text = dockerfile(binary)
    assert dockerfiles.check_exposed_ports(text, docs["base"], binary) == []
    broken = re.sub(r"^EXPOSE .*$", "EXPOSE 1234", text, flags=re.MULTILINE)
    assert dockerfiles.check_exposed_ports(broken, docs["base"], binary) != []
    # Built with the other service's ports, or with none.
    other = next(b for b in clihelp.BINARIES if b != binary)
    assert dockerfiles.check_exposed_ports(dockerfile(other), docs["base"], binary) != []
    assert any("${PORT}, which is no port number" in p
               for p in dockerfiles.check_exposed_ports(DOCKERFILE.read_text(), docs["base"], binary))


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_dockerfile_builds_and_runs_what_it_says(binary: str) -> None:
    text = dockerfile(binary)
    assert f'cargo build --release --locked --package "{binary}" --bin "{binary}"' in text
    assert re.search(r"^FROM gcr\.io/distroless/(cc|static)-debian\d+:nonroot@", text, re.MULTILINE)
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE), "uid must match runAsUser in kustomize/base"
    # The final stage runs the binary it copies from the build.
    [installed] = re.findall(rf"^COPY --from=builder /src/target/release/{binary} (\S+)$", text, re.MULTILINE)
    assert f'ENTRYPOINT ["{installed}"]' in text


def test_the_readme_and_the_dockerfile_build_each_image_as_compose_does() -> None:
    commands = []
    for source in (REPO_ROOT / "README.md", DOCKERFILE):
        joined = re.sub(r"\\\n#?\s*", " ", source.read_text())
        commands += re.findall(r"docker build [^\n]*", joined)
    built = {}
    for command in commands:
        words = shlex.split(command)
        args = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--build-arg")
        image = words[words.index("-t") + 1].split(":")[0].rsplit("/", 1)[-1]
        args.pop("VERSION", None)  # a release's own, compose builds the default
        assert args == build_args(image), command
        built[image] = built.get(image, 0) + 1
    assert built == {binary: 2 for binary in clihelp.BINARIES}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_builder_rust_is_at_least_the_workspace_rust_version() -> None:
    rust_version = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    tags = re.findall(r"^FROM rust:([\d.]+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert tags and all(_version(tag) >= _version(rust_version) for tag in tags), (tags, rust_version)


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
    text = dockerfile(binary)
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
    # A final stage that does not declare ARG SERVICE itself sees no value: the title stays a
    # bare reference.
    template = DOCKERFILE.read_text()
    final = template.rindex("\nFROM ")
    undeclared = template[:final] + template[final:].replace("\nARG SERVICE\n", "\n", 1)
    assert undeclared != template
    assert dockerfiles.check_oci_labels(dockerfiles.instantiate(undeclared, build_args(binary)), binary, workspace) == [
        f"{binary}: LABEL org.opencontainers.image.title=${{SERVICE}}, expected {binary}"]


@pytest.mark.parametrize("binary", clihelp.BINARIES)
def test_the_version_label_defaults_to_the_workspace_version(binary: str) -> None:
    text = dockerfile(binary)
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
    broken.write_text(DOCKERFILE.read_text().replace(
        'licenses="Apache-2.0"', 'licenses="Apache 2"'))
    result = run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(broken)])
    assert result.returncode != 0 and "DL3054" in result.stdout, result.stdout
