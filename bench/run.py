"""Run every benchmark in bench/ (files named bench_*.py), one after the other.

Each benchmark prints one line: `bench: NAME value=… baseline=… ratio=… goal=…`.
The ratio compares against a baseline measured in the same run, so a noisy shared
machine moves both sides alike.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if not scripts:
        print("bench: no benchmarks found")
        return 0
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print("bench: failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
