"""The conda environments the rules name must pin exactly what requirements.lock pins."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normalise(name)] = version
    return pins


def test_lock_pins_everything_exactly():
    pins = _lock()
    assert pins["torch"] == "2.13.0"  # not a local +cpu tag: the same file serves GPU clusters
    for name in ("snakemake", "lightning", "numpy", "galsim", "kcorrect", "speclite", "h5py", "astropy"):
        assert name in pins, name


def test_every_env_file_agrees_with_the_lock():
    pins = _lock()
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for env_file in env_files:
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        assert pip, env_file
        for requirement in pip:
            name, version = requirement.split("==")
            assert pins.get(_normalise(name)) == version, f"{env_file.name}: {requirement} vs lock {pins.get(name)}"
        assert "python=3.11" in env["dependencies"]


def test_every_rule_names_an_existing_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for line in smk.read_text().splitlines():
            if line.strip().startswith('"../../envs/'):
                assert (smk.parent / line.strip().strip('"')).resolve().exists(), line
