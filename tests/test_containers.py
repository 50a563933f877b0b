"""The container recipes and the SLURM array script: linted, and the Docker and Apptainer recipes
install the same things. No container engine runs here, so the images themselves are not built."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from treeutil import run_cli

from bidsdeid.demo import make_demo

PROJECT = Path(__file__).resolve().parents[1]
DOCKERFILE = PROJECT / "containers" / "Dockerfile"
DOCKERIGNORE = PROJECT / "containers" / "Dockerfile.dockerignore"
APPTAINER_DEF = PROJECT / "containers" / "bidsdeid.def"
SLURM_SCRIPT = PROJECT / "containers" / "slurm_array.sh"
SETUP_SCRIPT = PROJECT / "scripts" / "setup.sh"

# Options of the install commands that take a value (the value is not a package name).
_VALUED_OPTIONS = {"--prefix", "--index-url", "--extra-index-url"}
_APPTAINER_SECTIONS = ("%files", "%post", "%environment", "%runscript", "%test", "%labels", "%help")


def _linter(name: str) -> str:
    """The linter shipped by a PyPI wheel into the venv (or on PATH); skip when absent."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                      os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {name}-bin / {name}-py)")
    return found


def _shell_commands(text: str, arguments: dict[str, str]) -> list[list[str]]:
    """Every command of a recipe (continuations joined, ``&&`` split, ``${ARG}`` substituted)."""
    joined = re.sub(r"\\\n", " ", text)
    for name, value in arguments.items():
        joined = joined.replace(f"${{{name}}}", value)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in line.removeprefix("RUN ").split("&&"):
            words = shlex.split(part)
            if words:
                commands.append(words)
    return commands


def _installed(commands: list[list[str]], tool: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The operands (and valued options) of each ``tool`` invocation, in order."""
    calls = []
    for words in commands:
        if tuple(words[: len(tool)]) != tool:
            continue
        operands, rest = [], iter(words[len(tool):])
        for word in rest:
            if word in _VALUED_OPTIONS:
                operands.append(f"{word}={next(rest)}")
            elif not word.startswith("-"):
                operands.append(word)
        calls.append(tuple(operands))
    return calls


def _docker_arguments(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))


def _apptainer_sections(text: str) -> dict[str, str]:
    sections, name = {"header": ""}, "header"
    for line in text.splitlines():
        if line.startswith("%"):
            name = line.split()[0]
            sections[name] = ""
        else:
            sections[name] += line + "\n"
    return sections


def _recipes() -> tuple[list[list[str]], list[list[str]]]:
    docker = DOCKERFILE.read_text()
    apptainer = _apptainer_sections(APPTAINER_DEF.read_text())["%post"]
    return _shell_commands(docker, _docker_arguments(docker)), _shell_commands(apptainer, {})


def test_dockerfile_passes_hadolint():
    hadolint = _linter("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_slurm_array_script_passes_shellcheck():
    shellcheck = _linter("shellcheck")
    result = subprocess.run([shellcheck, "--severity=style", str(SLURM_SCRIPT)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


def test_apptainer_definition_has_every_section_and_the_dockerfile_base_image():
    text = APPTAINER_DEF.read_text()
    sections = _apptainer_sections(text)
    missing = [name for name in _APPTAINER_SECTIONS if name not in sections]
    assert not missing, f"{APPTAINER_DEF.name} lacks sections {missing}"
    docker_base = re.search(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE).group(1)
    assert re.search(r"^Bootstrap: docker$", sections["header"], flags=re.MULTILINE)
    assert re.search(rf"^From: {re.escape(docker_base)}$", sections["header"], flags=re.MULTILINE), \
        f"the Apptainer image must start from the Dockerfile's base {docker_base}"


@pytest.mark.parametrize("tool", [("apt-get", "install"), ("npm", "install"), ("pip", "install")])
def test_docker_and_apptainer_install_the_same_packages(tool):
    docker, apptainer = _recipes()
    assert _installed(docker, tool), f"the Dockerfile runs no {' '.join(tool)}"
    assert _installed(docker, tool) == _installed(apptainer, tool), \
        f"{' '.join(tool)} differs between the Dockerfile and {APPTAINER_DEF.name}"


def test_images_pin_the_torch_and_validator_versions_of_the_setup_script():
    docker, _ = _recipes()
    setup = _installed(_shell_commands(SETUP_SCRIPT.read_text(), {}), ("npm", "install"))
    setup += [tuple(re.findall(r'"(torch==[^"]+)"', SETUP_SCRIPT.read_text()))]
    image_packages = {word for call in _installed(docker, ("npm", "install"))
                      + _installed(docker, ("pip", "install")) for word in call}
    wanted = {word for call in setup for word in call
              if re.match(r"^(torch==|bids-validator@)", word)}
    assert len(wanted) == 2, f"could not read the pinned versions from {SETUP_SCRIPT.name}"
    assert wanted <= image_packages, f"the image lacks {wanted - image_packages}"


def test_images_copy_every_folder_the_wheel_is_built_from():
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", "README.md", *wheel["packages"], *wheel.get("force-include", {})}
    docker = {src for line in re.findall(r"^COPY (.+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
              for src in line.split()[:-1]}
    apptainer = {line.split()[0] for line in
                 _apptainer_sections(APPTAINER_DEF.read_text())["%files"].splitlines() if line.strip()}
    assert needed <= docker, f"the Dockerfile does not copy {needed - docker}"
    assert needed <= apptainer, f"{APPTAINER_DEF.name} does not copy {needed - apptainer}"


def test_docker_build_context_admits_exactly_what_the_dockerfile_copies():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    admitted = {line.removeprefix("!") for line in lines if line.startswith("!")}
    copied = {src for line in re.findall(r"^COPY (.+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
              for src in line.split()[:-1]}
    assert "*" in lines, "the build context must exclude everything by default"
    assert admitted == copied, f"admitted {sorted(admitted)} but the Dockerfile copies {sorted(copied)}"


def test_both_images_run_bidsdeid_as_entry_point():
    assert re.search(r'^ENTRYPOINT \["bidsdeid"\]$', DOCKERFILE.read_text(), flags=re.MULTILINE)
    runscript = _apptainer_sections(APPTAINER_DEF.read_text())["%runscript"].split()
    assert runscript == ["exec", "bidsdeid", '"$@"'], f"unexpected %runscript {runscript}"


def test_docker_image_does_not_run_as_root():
    users = re.findall(r"^USER (\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"USER lines: {users}"


def _run_array_task(task: int | None, *arguments: str | Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["BIDSDEID"] = f"{sys.executable} -m bidsdeid"
    if task is not None:
        env |= {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "7",
                "SLURM_CPUS_PER_TASK": "1", "SLURM_MEM_PER_NODE": "2048"}
    return subprocess.run(["bash", str(SLURM_SCRIPT), *map(str, arguments)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_array_task_processes_the_participant_on_its_line_of_the_labels_file(tmp_path):
    manifest = make_demo(tmp_path / "input", n_patients=2, seed=4)
    private = tmp_path / "private"
    labels = run_cli(manifest.root, tmp_path / "bids", "participant", "--private-dir", private,
                     "--list-participants", check=True).stdout.split()
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    task = _run_array_task(2, manifest.root, tmp_path / "bids", private, labels_file, "--dry-run")
    assert task.returncode == 0, task.stderr[-2000:]
    planned = [line for line in task.stdout.splitlines() if line.startswith("sub-")]
    assert planned == [f"sub-{labels[1]}"], f"task 2 planned {planned}, labels were {labels}"


def test_array_script_refuses_to_run_outside_an_array_job(tmp_path):
    task = _run_array_task(None, tmp_path / "in", tmp_path / "out", tmp_path / "private",
                           tmp_path / "labels.txt")
    assert task.returncode != 0
    assert "SLURM array job" in task.stderr, task.stderr


def test_array_task_without_a_label_fails_with_a_usage_error(tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("onlyone\n")
    task = _run_array_task(2, tmp_path / "in", tmp_path / "out", tmp_path / "private", labels_file)
    assert task.returncode == 2
    assert "no label on line 2" in task.stderr, task.stderr
