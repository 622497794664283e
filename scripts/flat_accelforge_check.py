#!/usr/bin/env python
"""Cross-check attnlib's FLAT model with AccelForge and CACTI; writes attnlib/flat/accelforge_check.csv.

Run by hand (not by run_all.sh, not in CI), from the repository root, with the project's venv:

    nice -n 19 .venv/bin/python scripts/flat_accelforge_check.py

What it does:

1. Finds a Python >= 3.12 (AccelForge uses 3.12-only syntax whatever its metadata says): $ACCELFORGE_PYTHON,
   python3.12 / python3.13 on PATH, or pyenv's 3.12+ builds; exits with a message if there is none.
2. Needs graphviz's ``dot`` on PATH (AccelForge's mapper always draws its mapping): ``apt-get install -y
   graphviz`` on Debian.
3. Builds a venv in .cache/accelforge-venv (gitignored; about 900 MB) with the pinned ``PINS``; when
   the CACTI binary bundled in hwcomponents-cacti does not run (it needs a newer glibc than Debian 12's),
   builds it from the source shipped beside it (``make opt``, seconds).
4. Runs itself again inside that venv as a worker (``--worker``; no attnlib there): AccelForge maps FLAT's
   BERT-like attention (batch 64, 12 heads, d_head 64; L = Q K^T then O = L V, the softmax left out as in
   FLAT's convention) onto FLAT's edge and cloud platforms (attnlib.flat.platform: PE array, buffer,
   DRAM bandwidth, clock and attnlib's energies per action), unfused (every tensor in DRAM) and fused (the
   intermediate L never in DRAM), and CACTI / hwcomponents give the energies of the platforms' SRAMs, a
   1 MiB bank, HBM2 / DDR3 / LPDDR4 DRAM and a 16-bit MAC at 45 nm.
5. Writes one CSV row per comparison with attnlib's value (attnlib.flat.crosscheck.attnlib_value), the
   tool's, what is expected of the pair, the tool versions and the date.

About 5-10 minutes on 2 cores (12 mappings of 20-60 s each).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "accelforge-venv"
PINS = ("accelforge==1.0.467", "hwcomponents==1.0.114", "hwcomponents-cacti==1.0.40",
        "hwcomponents-library==1.0.58")
SEQS = (512, 4096, 16384)
PLATFORMS = ("edge", "cloud")
MAPPINGS = ("unfused", "fused")
TECH_NODE_M = 45e-9          # attnlib's energies are at 45 nm (Horowitz ISSCC'14)
SRAM_WIDTH_BITS = 64         # Horowitz's SRAM points are 64-bit accesses


# ----------------------------------------------------------------------------- driver (project venv)
def find_python() -> str | None:
    """A Python >= 3.12 interpreter, or None."""
    cands = [os.environ.get("ACCELFORGE_PYTHON")]
    if sys.version_info >= (3, 12):
        cands.append(sys.executable)
    cands += [shutil.which(n) for n in ("python3.12", "python3.13", "python3.14")]
    cands += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")))
    cands += sorted(glob.glob("/root/.pyenv/versions/3.1[2-9]*/bin/python"))
    for c in cands:
        if not c or not os.path.exists(c):
            continue
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True,
                                 text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return c
    return None


def ensure_venv(python: str) -> Path:
    """The AccelForge venv's interpreter, created and filled with PINS when needed."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".pins"
    if py.exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS):
        return py
    print(f"[accelforge] creating {VENV.relative_to(ROOT)} with {python} (about 900 MB)", flush=True)
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    stamp.write_text("\n".join(PINS))
    return py


def ensure_cacti(py: Path) -> None:
    """Build CACTI from the source shipped in hwcomponents-cacti when the bundled binary does not run."""
    d = subprocess.run([str(py), "-c", "import hwcomponents_cacti, os; print(os.path.dirname(hwcomponents_cacti.__file__))"],
                       capture_output=True, text=True, check=True).stdout.strip()
    src = Path(d) / "cacti"
    exe = src / "cacti"
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    if "how to use CACTI" in r.stdout + r.stderr:
        return
    print(f"[accelforge] the bundled CACTI does not run ({(r.stderr or r.stdout).strip()[:120]}); building it from source",
          flush=True)
    subprocess.run(["make", "opt"], cwd=src, check=True, capture_output=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    if "how to use CACTI" not in r.stdout + r.stderr:
        sys.exit(f"CACTI built in {src} still does not run: {r.stderr[:300]}")


def job() -> dict:
    """The worker's input: each platform's numbers as attnlib has them, and the shapes."""
    from attnlib.flat import FLAT_BATCH, AttentionShape, Hardware, platform
    from attnlib.flat.crosscheck import MODEL

    plats = {}
    for p in PLATFORMS:
        hw = Hardware.of(platform(p))
        plats[p] = dict(side=hw.side, buffer_bytes=hw.capacity * hw.elem_bytes, bits=int(hw.elem_bytes * 8),
                        clock_hz=hw.clock_hz, dram_bw=hw.dram_bw, dram_pj_bit=hw.dram_pj_bit,
                        sram_pj_bit=hw.sram_pj_bit, mac_pj=hw.mac_pj)
    s = AttentionShape.from_model(MODEL, SEQS[0], FLAT_BATCH)
    return dict(platforms=plats, batch=s.batch, heads=s.heads, d_head=s.d_head, seqs=list(SEQS), mappings=list(MAPPINGS),
                tech_node_m=TECH_NODE_M, sram_width_bits=SRAM_WIDTH_BITS, sram_bank_bytes=1024 * 1024)


def rows(tool: dict) -> list[dict]:
    """One CSV row per comparison (attnlib's side recomputed from attnlib)."""
    from attnlib.flat.crosscheck import attnlib_value, compulsory_bytes, expected

    af = f"AccelForge {tool['versions']['accelforge']}"
    out = []

    def add(quantity, unit, platform, seq, mapping, component, value, tool_name, expect, tool_source, note=""):
        out.append(dict(quantity=quantity, unit=unit, platform=platform, seq=seq, mapping=mapping, component=component,
                        attnlib=attnlib_value(quantity, platform, seq, mapping, component), tool=value,
                        tool_name=tool_name, expect=expect, tool_source=tool_source, note=note))

    for r in tool["mappings"]:
        p, n, m = r["platform"], r["seq"], r["mapping"]
        fused = m == "fused"
        add("DRAM traffic", "B", p, n, m, "", r["dram_bytes"], af, expected("DRAM traffic", p, n, m),
            "MainMemory read + write actions (bits) / 8",
            f"compulsory {compulsory_bytes(p, n, m):.6g} B" + ("; no softmax in the workload, so the mapper may tile "
                                                               "the key dimension" if fused else ""))
        add("latency", "s", p, n, m, "", r["latency_s"], af, expected("latency", p, n, m),
            "Mappings.latency(): per Einsum the max over components, summed over Einsums",
            "per-Einsum " + ", ".join(f"{k} {v:.6g} s" for k, v in r["latency_per_einsum"].items()))
        add("MAC energy", "J", p, n, m, "", r["mac_energy_j"], af, "agree",
            "MAC component energy (given attnlib's pJ per MAC): checks the MAC count")
    cacti = f"CACTI 7 via hwcomponents-cacti {tool['versions']['hwcomponents-cacti']}"
    lib = f"hwcomponents-library {tool['versions']['hwcomponents-library']}"
    e = tool["energies"]
    for p in PLATFORMS:
        add("SRAM energy", "pJ/bit", p, None, None, f"SRAM {e['sram'][p]['bytes'] / 1024:g} KiB", e["sram"][p]["read_pj_bit"],
            cacti, "agree" if e["sram"][p]["bytes"] <= 1024 * 1024 else "differs",
            f"SRAM(tech_node=45 nm, width={SRAM_WIDTH_BITS}, one bank).read() / width",
            "attnlib: Horowitz 45 nm points, larger SRAMs assumed built of 1 MiB banks")
    add("SRAM energy", "pJ/bit", "cloud", None, None, "SRAM 1024 KiB", e["sram"]["bank"]["read_pj_bit"], cacti, "agree",
        f"SRAM(tech_node=45 nm, width={SRAM_WIDTH_BITS}, one bank).read() / width",
        "attnlib's bank assumption: the 1 MiB bank the 32 MiB buffer is charged as")
    for p, kind in (("edge", "DDR3"), ("edge", "LPDDR4"), ("cloud", "HBM2")):
        add("DRAM energy", "pJ/bit", p, None, None, kind, e["dram"][kind], f"hwcomponents-cacti {tool['versions']['hwcomponents-cacti']}",
            "differs", f"{kind}().read() / width (the package's DRAM table)",
            "attnlib: edge DDR, Horowitz ISSCC'14 low end; cloud HBM2, O'Connor MICRO'17")
    add("MAC energy per op", "pJ", "edge", None, None, "16-bit int MAC, 32-bit accumulator", e["mac16"], lib, "differs",
        "AladdinIntMAC(tech_node=45 nm, multiplier_width=16, adder_width=32).mac()",
        "attnlib: Horowitz 45 nm 8-bit multiply scaled as bits^2 + 32-bit add; both platforms")
    return out


def write_csv(table: list[dict], tool: dict, path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(table)
    v = tool["versions"]
    df["versions"] = (f"accelforge {v['accelforge']}, hwcomponents {v['hwcomponents']}, hwcomponents-cacti "
                      f"{v['hwcomponents-cacti']}, hwcomponents-library {v['hwcomponents-library']}, Python {v['python']}")
    df["date"] = _dt.date.today().isoformat()
    df["seq"] = df["seq"].astype("Int64")
    with open(path, "w") as f:
        f.write("# FLAT model vs AccelForge / CACTI: written by scripts/flat_accelforge_check.py; read by "
                "attnlib.flat.crosscheck (attnlib's column is recomputed there and in tests)\n")
        df.to_csv(f, index=False, float_format="%.10g")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("IN_JSON", "OUT_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "attnlib" / "flat" / "accelforge_check.csv"))
    ap.add_argument("--raw", default=str(ROOT / ".cache" / "accelforge-tool.json"),
                    help="where the tools' raw output is kept (gitignored)")
    ap.add_argument("--from-raw", action="store_true",
                    help="rewrite the CSV from the kept raw output without running the tools again")
    a = ap.parse_args(argv)
    if a.worker:
        return worker(*a.worker)
    if a.from_raw:
        tool = json.loads(Path(a.raw).read_text())
        write_csv(rows(tool), tool, Path(a.out))
        print(f"[accelforge] wrote {a.out} from {a.raw}")
        return 0
    python = find_python()
    if python is None:
        sys.exit("AccelForge needs Python >= 3.12 (it uses 3.12-only syntax); none found. Set ACCELFORGE_PYTHON "
                 "to one (e.g. a pyenv 3.12 build) and run again.")
    if shutil.which("dot") is None:
        sys.exit("AccelForge's mapper draws every mapping with graphviz's `dot`, which is not on PATH: "
                 "apt-get install -y graphviz (Debian), then run again.")
    py = ensure_venv(python)
    ensure_cacti(py)
    with tempfile.TemporaryDirectory() as tmp:     # the mapper writes mapping.svg into its working directory
        jin, jout = Path(tmp) / "job.json", Path(tmp) / "tool.json"
        jin.write_text(json.dumps(job()))
        subprocess.run([str(py), str(Path(__file__).resolve()), "--worker", str(jin), str(jout)], cwd=tmp, check=True)
        tool = json.loads(jout.read_text())
    Path(a.raw).parent.mkdir(parents=True, exist_ok=True)
    Path(a.raw).write_text(json.dumps(tool, indent=1))
    write_csv(rows(tool), tool, Path(a.out))
    print(f"[accelforge] wrote {a.out}")
    return 0


# ----------------------------------------------------------------------------- worker (AccelForge venv)
ARCH = """
arch:
  nodes:
  - !Memory
    name: MainMemory
    size: inf
    leak_power: 0
    area: 0
    tensors: {{keep: {keep}, may_keep: All}}
    actions:
    - {{name: read, energy: {dram_j_bit}, throughput: {dram_bits_s}}}
    - {{name: write, energy: {dram_j_bit}, throughput: {dram_bits_s}}}
  - !Memory
    name: GlobalBuffer
    size: {buffer_bits}
    leak_power: 0
    area: 0
    tensors: {{keep: ~MainMemory, may_keep: All}}
    actions:
    - {{name: read, energy: {sram_j_bit}, throughput: inf}}
    - {{name: write, energy: {sram_j_bit}, throughput: inf}}
  - !Container
    name: PE
    spatial:
    - {{name: X, fanout: {side}}}
    - {{name: Y, fanout: {side}}}
  - !Compute
    name: MAC
    leak_power: 0
    area: 0
    actions:
    - {{name: compute, energy: {mac_j}, throughput: {clock_hz}}}
"""

WORKLOAD = """
workload:
  rank_sizes: {{B: {batch}, H: {heads}, M: {seq}, P: {seq}, E: {d_head}, F: {d_head}}}
  bits_per_value: {{All: {bits}}}
  einsums:
  - einsum: "L[b, h, m, p] = Q[b, h, m, e] * K[b, h, p, e]"
    renames: {{input: Q, weight: K}}
  - einsum: "O[b, h, m, f] = L[b, h, m, p] * V[b, h, p, f]"
    renames: {{input: L, weight: V}}
"""


def _map(af, job: dict, plat: dict, seq: int, mapping: str, tmp: Path) -> dict:
    import time

    arch = ARCH.format(keep="All" if mapping == "unfused" else "~Intermediates", dram_j_bit=plat["dram_pj_bit"] * 1e-12,
                       dram_bits_s=plat["dram_bw"] * 8, buffer_bits=int(plat["buffer_bytes"] * 8),
                       sram_j_bit=plat["sram_pj_bit"] * 1e-12, side=plat["side"], mac_j=plat["mac_pj"] * 1e-12,
                       clock_hz=plat["clock_hz"])
    wl = WORKLOAD.format(batch=job["batch"], heads=job["heads"], seq=seq, d_head=job["d_head"], bits=plat["bits"])
    (tmp / "arch.yaml").write_text(arch)
    (tmp / "workload.yaml").write_text(wl)
    spec = af.Spec.from_yaml(tmp / "arch.yaml", tmp / "workload.yaml")
    spec.mapper.metrics = af.mapper.Metrics.LATENCY | af.mapper.Metrics.ENERGY
    t0 = time.perf_counter()
    m = spec.map_workload_to_arch(print_progress=False)
    secs = time.perf_counter() - t0
    lat = list(m.latency(list_if_one_mapping=True))
    energy = list(m.energy(list_if_one_mapping=True))
    i = min(range(len(lat)), key=lambda k: (lat[k], energy[k]))   # the Pareto point with the lowest latency
    acts = m.actions(per_component=True, list_if_one_mapping=True)
    bits = sum(v[i] for (comp, _), v in acts.items() if comp == "MainMemory")
    en = m.energy(per_component=True, list_if_one_mapping=True)
    per_einsum = {k: float(v[i]) for k, v in m.latency(per_einsum=True, list_if_one_mapping=True).items()}
    return dict(dram_bytes=float(bits) / 8, latency_s=float(lat[i]), mac_energy_j=float(en["MAC"][i]),
                latency_per_einsum=per_einsum, mapper_seconds=secs, pareto_points=len(lat))


def worker(jin: str, jout: str) -> int:
    from importlib.metadata import version

    import accelforge as af
    from hwcomponents_cacti import DDR3, HBM2, LPDDR4, SRAM
    from hwcomponents_library.library.aladdin import AladdinIntMAC

    job = json.loads(Path(jin).read_text())
    af.set_n_parallel_jobs(1, print_message=False)      # gentle on a shared 2-core machine
    tmp = Path.cwd()
    maps = []
    for pname, plat in job["platforms"].items():
        for seq in job["seqs"]:
            for mapping in job["mappings"]:
                r = _map(af, job, plat, seq, mapping, tmp)
                print(f"[accelforge] {pname} N={seq} {mapping}: {r['dram_bytes']:.4g} B, {r['latency_s']:.4g} s "
                      f"(mapper {r['mapper_seconds']:.1f} s)", flush=True)
                maps.append(dict(platform=pname, seq=seq, mapping=mapping, **r))
    w = job["sram_width_bits"]

    def sram(nbytes):
        s = SRAM(tech_node=job["tech_node_m"], width=w, size=int(nbytes * 8))
        return dict(bytes=nbytes, read_pj_bit=s.read().energy / w * 1e12, write_pj_bit=s.write().energy / w * 1e12)

    energies = dict(sram={p: sram(job["platforms"][p]["buffer_bytes"]) for p in job["platforms"]},
                    dram={})
    energies["sram"]["bank"] = sram(job["sram_bank_bytes"])
    for cls in (DDR3, LPDDR4, HBM2):
        d = cls()
        energies["dram"][cls.__name__] = d.read().energy / d.width * 1e12
    energies["mac16"] = AladdinIntMAC(tech_node=job["tech_node_m"], multiplier_width=16, adder_width=32).mac().energy * 1e12
    versions = {k: version(k) for k in ("accelforge", "hwcomponents", "hwcomponents-cacti", "hwcomponents-library")}
    versions["python"] = ".".join(map(str, sys.version_info[:3]))
    Path(jout).write_text(json.dumps(dict(mappings=maps, energies=energies, versions=versions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
