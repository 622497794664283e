"""ReRAM crossbar + comparator primitives: the in-memory scoring engine of SPRINT-style designs.

A crossbar of ``rows x cols`` resistive cells stores a matrix as conductances. Driving the word lines
with an input vector (through DACs) makes every bit line carry an analog current equal to the dot
product of the input with that column. ISAAC-style designs digitise each bit line with a (shared)
multi-bit ADC; a *thresholding* design such as SPRINT only needs a 1-bit decision per bit line
(score above / below a reference), i.e. one comparator, which is far cheaper than an ADC.

Mapping used here (for attention scoring): each KEY occupies ``ceil(key_bits / cell_bits)`` adjacent
columns (bit slices combined in analog, ASSUMPTION), its ``d_head`` elements lie along the word
lines; the QUERY drives the word lines, ``input_bits_per_cycle`` bits per read cycle (ISAAC: 1-bit
DACs, bit-serial inputs). All keys of one head sit in ``arrays_per_head`` crossbars that are read in
parallel; the heads of one layer are read in parallel too (ASSUMPTION: enough crossbars for one layer).

Every constant carries its source; numbers recalled from the ISAAC paper's Table I are labelled as such
(Shafiee et al., "ISAAC: A Convolutional Neural Network Accelerator with In-Situ Analog Arithmetic in
Crossbars", ISCA 2016, 32 nm, Table I "IMA properties"): 8 ADCs (8-bit, 1.28 GS/s) = 16 mW;
8x128 1-bit DACs = 4 mW; 8x128 sample-and-holds = 10 uW; 8 crossbars of 128x128 2-bit cells = 2.4 mW;
crossbar read cycle 100 ns. Per-action energies below are derived from those powers x the 100 ns
cycle (or / the sample rate for the ADC). The 1-bit comparator is derived from the ADC through the
Walden figure of merit (energy per conversion step constant: E = FOM * 2^bits), an ASSUMPTION.
The cell write (programming) energy is an ASSUMPTION (order of magnitude of published ReRAM
SET/RESET energies with write-verify), swept in the notebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

ISAAC = ("Shafiee et al., ISAAC, ISCA 2016, Table I (32 nm). ADC (8 x 8-bit, 16 mW, 1.28 GSps), DAC "
         "(8 x 128 1-bit, 4 mW) and the 100 ns cycle agree with public secondary analyses of that table; "
         "crossbar (2.4 mW) and sample-and-hold (10 uW) powers are as recalled, not cross-checked")
WALDEN = "Walden, 'Analog-to-digital converter survey and analysis', IEEE JSAC 1999 (FOM = P / (2^ENOB * fs))"

# ---- ISAAC-derived per-action energies (32 nm)
ISAAC_CYCLE_S = 100e-9                                       # crossbar read cycle, ISAAC Table I
ISAAC_XBAR_POWER_W = 2.4e-3 / 8                              # one 128x128 array, ISAAC Table I
ISAAC_CELL_READ_PJ = ISAAC_XBAR_POWER_W * ISAAC_CYCLE_S / (128 * 128) * 1e12   # ~1.8e-3 pJ per cell per cycle
ISAAC_DAC_PJ = 4e-3 / (8 * 128) * ISAAC_CYCLE_S * 1e12      # one 1-bit DAC (word-line driver) per cycle, ~3.9e-4 pJ
ISAAC_SH_PJ = 10e-6 / (8 * 128) * ISAAC_CYCLE_S * 1e12      # one sample-and-hold per cycle, ~1e-6 pJ
ISAAC_ADC_BITS = 8
ISAAC_ADC_PJ = 16e-3 / 8 / 1.28e9 * 1e12                    # one 8-bit conversion, ~1.56 pJ


def adc_energy_pj(bits: int, *, anchor_pj: float = ISAAC_ADC_PJ, anchor_bits: int = ISAAC_ADC_BITS) -> float:
    """Energy of one ``bits``-bit conversion, scaled from the anchor ADC at constant Walden FOM
    (energy proportional to 2^bits). ``bits=1`` is a single comparator decision."""
    if int(bits) != bits or bits < 1:
        raise ValueError(f"ADC resolution must be a positive integer, got {bits}")
    return anchor_pj * 2.0 ** (bits - anchor_bits)


@dataclass(frozen=True)
class CrossbarSpec:
    """One ReRAM crossbar tile with its peripheral circuits.

    rows, cols: array size; cell_bits: bits stored per cell; cycle_s: one analog read (one input slice);
    input_bits_per_cycle: DAC resolution (1 = bit-serial input); cell_read_pj: energy per cell per read
    cycle; dac_pj: per driven word line per cycle; sh_pj: per bit line per cycle (sample-and-hold);
    comparator_pj: one 1-bit decision; adc_pj: one conversion of ``adc_bits`` (for the ADC variant);
    cell_write_pj: programming one cell (incl. verify); write_cycle_s: one row program pulse;
    node_nm: the technology node the energies refer to; mac_pj: when set, the all-inclusive energy of
    one in-memory multiply-accumulate (one key element times one query element, cells + drivers +
    sample-and-hold), which replaces the cell / DAC / sample-and-hold accounting (the comparator or
    ADC decision is still counted on its own).
    """

    rows: int = 128
    cols: int = 128
    cell_bits: int = 2
    cycle_s: float = ISAAC_CYCLE_S
    input_bits_per_cycle: int = 1
    cell_read_pj: float = ISAAC_CELL_READ_PJ
    dac_pj: float = ISAAC_DAC_PJ
    sh_pj: float = ISAAC_SH_PJ
    comparator_pj: float = adc_energy_pj(1)
    adc_bits: int = ISAAC_ADC_BITS
    adc_pj: float = ISAAC_ADC_PJ
    cell_write_pj: float = 10.0
    write_cycle_s: float = 50e-9
    node_nm: float = 32
    mac_pj: float | None = None
    sources: dict = field(default_factory=lambda: dict(SOURCES))

    def __post_init__(self):
        for name in ("rows", "cols", "cell_bits", "input_bits_per_cycle", "adc_bits"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"CrossbarSpec.{name} must be a positive integer, got {v}")
        for name in ("cycle_s", "write_cycle_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CrossbarSpec.{name} must be positive")
        for name in ("cell_read_pj", "dac_pj", "sh_pj", "comparator_pj", "adc_pj", "cell_write_pj"):
            if getattr(self, name) < 0:
                raise ValueError(f"CrossbarSpec.{name} must be >= 0")
        if self.mac_pj is not None and self.mac_pj < 0:
            raise ValueError("CrossbarSpec.mac_pj must be >= 0 (or None)")

    def with_(self, **changes) -> "CrossbarSpec":
        return replace(self, **changes)

    def at_node(self, node_nm: float, *, alpha: float = 1.0) -> "CrossbarSpec":
        """The spec with its CMOS periphery (DAC, sample-and-hold, comparator, ADC) scaled to ``node_nm``
        as (node / self.node_nm) ** alpha, the same rule as attnlib.hw.energy; the resistive cells'
        read and write energies are device properties and are NOT scaled (ASSUMPTION)."""
        if not node_nm > 0:
            raise ValueError(f"node must be positive, got {node_nm}")
        f = (node_nm / self.node_nm) ** alpha
        return replace(self, dac_pj=self.dac_pj * f, sh_pj=self.sh_pj * f, comparator_pj=self.comparator_pj * f,
                       adc_pj=self.adc_pj * f, node_nm=node_nm)


SOURCES = {
    "rows/cols/cell_bits": ISAAC + ": 128x128 arrays, 2 bits per cell",
    "cycle_s": ISAAC + ": 100 ns per crossbar read (one input bit)",
    "input_bits_per_cycle": ISAAC + ": 1-bit DACs, inputs applied bit-serially",
    "cell_read_pj": ISAAC + ": 2.4 mW per 8 arrays x 100 ns / (128*128) cells",
    "dac_pj": ISAAC + ": 4 mW per 8x128 DACs x 100 ns",
    "sh_pj": ISAAC + ": 10 uW per 8x128 sample-and-holds x 100 ns",
    "adc_pj": ISAAC + ": 16 mW per 8 ADCs at 1.28 GS/s",
    "comparator_pj": "derived: 8-bit ADC energy / 2^7 at constant Walden FOM (" + WALDEN + "); ASSUMPTION",
    "cell_write_pj": "ASSUMPTION: 10 pJ per multi-level cell program incl. write-verify (ReRAM SET/RESET "
                     "pulses are reported at ~0.1-10 pJ/bit; verify loops multiply it); swept",
    "write_cycle_s": "ASSUMPTION: 50 ns program pulse (order of published ReRAM write latencies); writes are "
                     "assumed hidden behind the K projection",
    "node_nm": ISAAC + ": 32 nm",
}


def columns_per_key(key_bits: int, spec: CrossbarSpec) -> int:
    """Bit-line columns one key occupies (bit slices of ``cell_bits`` each)."""
    return math.ceil(key_bits / spec.cell_bits)


def arrays_per_head(n_keys: int, d_head: int, key_bits: int, spec: CrossbarSpec) -> int:
    """Crossbars needed to hold ``n_keys`` keys of width ``d_head``."""
    keys_per_array = spec.cols // columns_per_key(key_bits, spec)
    if keys_per_array < 1:
        raise ValueError(f"a {key_bits}-bit key needs more than {spec.cols} columns")
    return math.ceil(n_keys / keys_per_array) * math.ceil(d_head / spec.rows)


def scoring_cycles(query_bits: int, spec: CrossbarSpec) -> int:
    """Read cycles to apply one ``query_bits``-bit query to the crossbar."""
    return math.ceil(query_bits / spec.input_bits_per_cycle)


@dataclass(frozen=True)
class ScoringCost:
    """Energy (J) split by component and time (s) of in-memory scoring + thresholding."""

    cells_j: float
    dac_j: float
    sh_j: float
    decision_j: float
    time_s: float

    @property
    def energy_j(self) -> float:
        return self.cells_j + self.dac_j + self.sh_j + self.decision_j


def scoring_cost(n_queries: float, key_slots: float, d_head: int, *, key_bits: int, query_bits: int,
                 spec: CrossbarSpec, readout: str = "comparator", parallel_queries: int = 1) -> ScoringCost:
    """In-memory scoring of ``n_queries`` queries of ONE head against its keys.

    key_slots: total (query, key) pairs scored, i.e. sum over queries of the keys stored for that query
    (T*T for an encoder, T(T+1)/2 for a causal decoder: only keys already written exist in the array).
    Each pair activates d_head x columns_per_key cells per cycle, drives its bit-slice columns through a
    sample-and-hold, and needs one decision (comparator) or one ``adc_bits`` conversion (readout="adc").
    Each query drives d_head word lines per cycle in every array it touches (one array row-group per
    ~cols/cpk keys). time_s: n_queries x cycles x cycle_s / parallel_queries (the head's arrays are read
    in parallel; ``parallel_queries`` > 1 means replicated keys).
    """
    if readout not in ("comparator", "adc"):
        raise ValueError(f"readout must be 'comparator' or 'adc', got {readout!r}")
    if n_queries < 0 or key_slots < 0:
        raise ValueError("query and key counts must be >= 0")
    cpk = columns_per_key(key_bits, spec)
    cyc = scoring_cycles(query_bits, spec)
    keys_per_array = spec.cols // cpk
    mean_keys = key_slots / n_queries if n_queries else 0.0
    arrays_touched = n_queries * math.ceil(mean_keys / keys_per_array) if n_queries else 0.0
    cells = key_slots * d_head * cpk * cyc
    dac = arrays_touched * d_head * cyc
    sh = key_slots * cpk * cyc
    per_decision = spec.comparator_pj if readout == "comparator" else spec.adc_pj
    decisions = key_slots * (1 if readout == "comparator" else cpk * cyc)
    pj = 1e-12
    if spec.mac_pj is not None:  # all-inclusive energy per in-memory MAC (e.g. SPRINT's reported figure)
        return ScoringCost(cells_j=key_slots * d_head * spec.mac_pj * pj, dac_j=0.0, sh_j=0.0,
                           decision_j=decisions * per_decision * pj,
                           time_s=n_queries * cyc * spec.cycle_s / max(1, parallel_queries))
    return ScoringCost(cells_j=cells * spec.cell_read_pj * pj, dac_j=dac * spec.dac_pj * pj,
                       sh_j=sh * spec.sh_pj * pj, decision_j=decisions * per_decision * pj,
                       time_s=n_queries * cyc * spec.cycle_s / max(1, parallel_queries))


def write_energy_j(n_keys: float, d_head: int, *, key_bits: int, spec: CrossbarSpec, copies: int = 1) -> float:
    """Energy to program ``n_keys`` keys of one head into the crossbar (``copies`` replicas)."""
    return n_keys * d_head * columns_per_key(key_bits, spec) * spec.cell_write_pj * 1e-12 * copies


def constants_rows(spec: CrossbarSpec) -> list[dict]:
    """The spec as table rows (name, value, source) for a notebook's constants table."""
    keys = {"rows/cols/cell_bits": f"{spec.rows}x{spec.cols}, {spec.cell_bits} b/cell",
            "cycle_s": f"{spec.cycle_s * 1e9:g} ns", "input_bits_per_cycle": spec.input_bits_per_cycle,
            "cell_read_pj": f"{spec.cell_read_pj:.3g} pJ", "dac_pj": f"{spec.dac_pj:.3g} pJ",
            "sh_pj": f"{spec.sh_pj:.3g} pJ", "adc_pj": f"{spec.adc_pj:.3g} pJ ({spec.adc_bits} b)",
            "comparator_pj": f"{spec.comparator_pj:.3g} pJ", "cell_write_pj": f"{spec.cell_write_pj:g} pJ",
            "write_cycle_s": f"{spec.write_cycle_s * 1e9:g} ns", "node_nm": f"{spec.node_nm:g} nm"}
    if spec.mac_pj is not None:
        keys["mac_pj"] = f"{spec.mac_pj:g} pJ per in-memory MAC (replaces cell/DAC/S&H)"
    return [dict(constant=k, value=v, source=spec.sources.get(k, "")) for k, v in keys.items()]


# ---- SPRINT's own constants (secondary source: a structured summary of the full paper, see the card)
SPRINT_S1 = ("secondary: S1 (RyoTTa/chamber-paper-wiki summary of the SPRINT paper, MICRO 2022; see "
             "docs/papers/sprint.md)")
SPRINT_NODE_NM = 65                # TSMC 65 nm
SPRINT_CLOCK_HZ = 1e9              # 1 GHz
SPRINT_MAC_PJ = 0.10               # per in-memory MAC in ReRAM at 65 nm
SPRINT_READ_PJ_PER_BIT = 3.1       # ReRAM main memory read
SPRINT_WRITE_PJ_PER_BIT = 24.4     # ReRAM main memory write
SPRINT_KEY_BITS = 4                # 4 MSBs of each key in the transposable crossbar
SPRINT_THRESHOLD_CYCLES = 8        # tAxTh < 8 cycles for in-memory thresholding (upper bound used)


def sprint_crossbar(*, threshold_cycles: float = SPRINT_THRESHOLD_CYCLES, mac_pj: float = SPRINT_MAC_PJ,
                    base: CrossbarSpec | None = None) -> CrossbarSpec:
    """The crossbar with SPRINT's reported constants: 0.10 pJ per in-memory MAC (all-inclusive), a 1-bit
    comparator per bit line (the ISAAC-derived comparator energy, scaled to 65 nm), and in-memory
    scoring plus thresholding of one query in ``threshold_cycles`` cycles of the 1 GHz clock (the
    paper's tAxTh < 8 cycles: 8 is the conservative end), the whole query applied at once (a 4-bit
    DAC, one read per query). Cell writes keep the ASSUMPTION of `CrossbarSpec`."""
    if not threshold_cycles > 0:
        raise ValueError(f"threshold_cycles must be positive, got {threshold_cycles}")
    spec = (base or CrossbarSpec()).at_node(SPRINT_NODE_NM)
    sources = dict(spec.sources)
    sources.update({
        "mac_pj": SPRINT_S1 + ": 0.10 pJ per in-memory MAC (65 nm ReRAM)",
        "cycle_s": SPRINT_S1 + f": in-memory thresholding tAxTh < 8 cycles at 1 GHz; {threshold_cycles:g} cycles used",
        "input_bits_per_cycle": "ASSUMPTION: the 4-bit query is applied in one read (multi-bit DACs), so one query "
                                "takes one tAxTh",
        "comparator_pj": sources["comparator_pj"] + "; scaled to 65 nm (1-bit comparator per bit line: " + SPRINT_S1 + ")",
        "node_nm": SPRINT_S1 + ": TSMC 65 nm",
    })
    return replace(spec, mac_pj=mac_pj, cycle_s=threshold_cycles / SPRINT_CLOCK_HZ, input_bits_per_cycle=SPRINT_KEY_BITS,
                   sources=sources)
