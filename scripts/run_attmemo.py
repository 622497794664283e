#!/usr/bin/env python
"""Run notebooks/05_attmemo.ipynb alone (publishing its figures and results like run_all.sh, without the
scorecard or the README), and print the wall time: `.venv/bin/python scripts/run_attmemo.py [full|quick]`.
Run it under the CPU lock (`flock /tmp/cpu.lock ...`): its latencies are measured."""
import sys
import time

from attnlib import runner

profile = sys.argv[1] if len(sys.argv) > 1 else "full"
nb = runner.find_notebooks(["05_attmemo"])[0]
t = time.time()
ok, msg = runner.run_one(nb, {"profile": profile}, profile)
print(f"05_attmemo ({profile}): {'ok' if ok else 'FAILED'}: {msg}; wall {time.time() - t:.0f} s")
sys.exit(0 if ok else 1)
