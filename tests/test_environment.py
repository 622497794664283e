"""The installation files agree with each other."""
import re
import tomllib

from attnlib.paths import repo_root

ROOT = repo_root()


def _pyproject_deps():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _environment_pip_deps():
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    return re.findall(r"^\s+- (\S+==\S+)\s*$", pip_block, flags=re.M)


def test_environment_yml_mirrors_pyproject():
    assert _environment_pip_deps() == _pyproject_deps()


def test_every_dependency_is_pinned_and_torch_is_the_cpu_pin():
    deps = _pyproject_deps()
    assert all("==" in d for d in deps), [d for d in deps if "==" not in d]
    assert "torch==2.13.0" in deps


def test_no_deps_packages_agree():
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    nodeps = re.search(r"nodeps=\(([^)]*)\)", setup).group(1).split()
    declared = re.findall(r"^# no-deps: (.+)$", (ROOT / "environment.yml").read_text(), flags=re.M)
    assert nodeps == [d for line in declared for d in line.split()]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in ci
    assert "./run_tests.sh" in (ROOT / "README.md").read_text()
