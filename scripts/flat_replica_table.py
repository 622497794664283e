"""Write attnlib/flat/fusemax_flat_validation.csv: the rows of the FuseMax replica of FLAT at N = 512..64K.

Source: FPSG-UIUC/micro24-fusemax-artifact (commit f543beb, MIT licence),
workspace/outputs/pregenerated/results/flat_validation.csv, as kept in ../shared/reference/fusemax/. Only the
columns the FLAT notebook uses are kept (platform, model, N, the mapping, mem_traffic in bytes, actual_latency
in s), so CI and a fresh clone need no copy of the shared reference. Run from the repository root:

    .venv/bin/python scripts/flat_replica_table.py [path/to/flat_validation.csv]
"""
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference" / "fusemax" / "flat_validation.csv"
OUT = ROOT / "attnlib" / "flat" / "fusemax_flat_validation.csv"
LENGTHS = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096, "8K": 8192, "16K": 16384, "32K": 32768, "64K": 65536}

if not SRC.exists():
    sys.exit(f"no FuseMax reference table at {SRC}")
ref = pd.read_csv(SRC)
ref = ref[ref.seq_len.isin(list(LENGTHS))].copy()
ref["seq"] = ref.seq_len.map(LENGTHS)
cols = ["platform", "models", "seq", "fusion_granularity", "P1", "K_loc", "QK_loc", "QK_stationarity", "AV_stationarity",
        "mem_traffic", "actual_latency"]
out = ref[cols].rename(columns={"models": "model"}).sort_values(["platform", "model", "seq"])
header = ("# FuseMax replica of FLAT (FPSG-UIUC/micro24-fusemax-artifact, commit f543beb, MIT licence), "
          "workspace/outputs/pregenerated/results/flat_validation.csv, rows N = 512..64K; written by "
          "scripts/flat_replica_table.py\n")
OUT.write_text(header + out.to_csv(index=False, float_format="%.10g"))
print(f"{len(out)} rows -> {OUT.relative_to(ROOT)}")
