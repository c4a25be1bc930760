"""Where the scripts find the project's build: the repository root (from
this file's place) and Cargo's target directory (`CARGO_TARGET_DIR`, else
what `cargo metadata` says, else `ROOT/target`). Import it from a script in
a subfolder with:

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import paths
"""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def target_dir():
    """Cargo's target directory for this workspace."""
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        return os.path.abspath(env)
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return json.loads(out)["target_directory"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return os.path.join(ROOT, "target")


def release(*parts):
    """A path under the release profile's directory."""
    return os.path.join(target_dir(), "release", *parts)
