"""What the benchmark runs: the matrix of cases (the LSTM's sizes x variants and the GRU's
rows), the modes, the competitors and the target ratios of every row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

SEED = 0

# ============================================================================ the matrix
# name -> (T, B, I, H)
SIZES: Dict[str, Tuple[int, int, int, int]] = {
    "small": (100, 1, 64, 128),
    "medium": (100, 32, 256, 256),
    "large": (50, 64, 512, 1024),
    "sweep B=1": (100, 1, 256, 256),
    "sweep B=4": (100, 4, 256, 256),
    "sweep B=16": (100, 16, 256, 256),
    "sweep B=64": (100, 64, 256, 256),
}
VARIANTS = ("plain", "peepholes", "projection", "float64", "2x bidir")
VARIANT_LABEL = {
    "plain": "plain",
    "peepholes": "peepholes (torch: plain)",
    "projection": "projection P=H/2",
    "float64": "float64",
    "2x bidir": "2 layers x bidirectional",
}
CELLS = ("lstm", "gru")
# the GRU rows (fr.GRU with linear_before_reset=True against torch.nn.GRU and ORT's GRU node)
GRU_MATRIX: List[Tuple[str, str, str]] = [("small", "plain", "gru"), ("medium", "plain", "gru"),
                                          ("medium", "float64", "gru"), ("large", "plain", "gru")]
# (size, variant, cell)
FULL_MATRIX: List[Tuple[str, str, str]] = (
    [("small", v, "lstm") for v in VARIANTS] + [("medium", v, "lstm") for v in VARIANTS]
    + [("large", "plain", "lstm")] + [(f"sweep B={b}", "plain", "lstm") for b in (1, 4, 16, 64)]
    + GRU_MATRIX)
QUICK_MATRIX: List[Tuple[str, str, str]] = (
    [("small", v, "lstm") for v in VARIANTS] + [("medium", "plain", "lstm"), ("small", "plain", "gru")])
MODES = {"inference": "inference", "train": "training step"}
COMPETITORS = ("fusedrnn", "torch", "ort", "oracle", "floor")
BUILD_COMPETITORS = ("fusedrnn", "floor")  # they time the fusedrnn installation (--baseline)
COMPETITOR_LABEL = {"fusedrnn": "fusedrnn", "torch": "torch", "ort": "ORT",
                    "oracle": "NumPy oracle", "floor": "GEMM floor", "frtorch": "fusedrnn.torch"}


def case_label(size: str, variant: str, cell: str = "lstm") -> str:
    """A row's first column: "small plain", "GRU medium float64"."""
    return ("GRU " if cell == "gru" else "") + f"{size} {VARIANT_LABEL.get(variant, variant)}"


@dataclass(frozen=True)
class Case:
    size: str
    variant: str
    T: int
    B: int
    I: int
    H: int
    cell: str = "lstm"  # "lstm" or "gru"

    @property
    def name(self) -> str:
        return ("gru " if self.cell == "gru" else "") + f"{self.size} / {self.variant}"

    @property
    def gates(self) -> int:
        """Gate blocks of the GEMMs: 4 (LSTM) or 3 (GRU: r, z, n)."""
        return 3 if self.cell == "gru" else 4

    def label(self) -> str:
        return case_label(self.size, self.variant, self.cell)

    @property
    def dtype(self) -> str:
        return "float64" if self.variant == "float64" else "float32"

    @property
    def peepholes(self) -> bool:
        return self.variant == "peepholes"

    @property
    def P(self) -> int:
        return self.H // 2 if self.variant == "projection" else 0

    @property
    def R(self) -> int:
        return self.P or self.H

    @property
    def layers(self) -> int:
        return 2 if self.variant == "2x bidir" else 1

    @property
    def D(self) -> int:
        return 2 if self.variant == "2x bidir" else 1

    def dims(self) -> str:
        return f"T={self.T} B={self.B} I={self.I} H={self.H}" + (f" P={self.P}" if self.P else "")

    def cells(self):
        """(layer, direction, input width) of every kernel cell."""
        for l in range(self.layers):
            for d in range(self.D):
                yield l, d, self.I if l == 0 else self.D * self.R

    def runs(self, competitor: str) -> bool:
        if competitor == "ort":    # ONNX Runtime: float32, one unidirectional layer, no projection
            return self.dtype == "float32" and self.layers == 1 and self.D == 1 and not self.P
        if competitor == "oracle":  # the NumPy oracle only at the smallest size, one LSTM layer
            return (self.cell == "lstm" and self.size == "small"
                    and self.variant in ("plain", "peepholes"))
        return True

    def modes(self, competitor: str) -> Tuple[str, ...]:
        return ("inference",) if competitor == "ort" else tuple(MODES)

    def job_key(self, competitor: str) -> str:
        """Identical computations share one measurement: torch has no peepholes (the
        peephole case times torch plain) and diagonal peepholes add no GEMM to the floor."""
        peep = self.peepholes and competitor not in ("torch", "floor")
        cell = "gru:" if self.cell == "gru" else ""  # the LSTM's keys as before
        return (f"{competitor}|{cell}{self.T},{self.B},{self.I},{self.H},{self.P}|{self.dtype}|"
                f"L{self.layers}D{self.D}|peep={int(peep)}")


def make_case(size: str, variant: str, cell: str = "lstm") -> Case:
    return Case(size, variant, *SIZES[size], cell=cell)


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    size: str
    variant: str
    mode: str
    against: str   # competitor, or "floor"
    bound: float   # competitor/fr >= bound, or fr/floor <= bound
    cell: str = "lstm"

    def ok(self, ratio: float) -> bool:
        return ratio <= self.bound if self.against == "floor" else ratio >= self.bound

    def text(self) -> str:
        if self.against == "floor":
            return f"<= {self.bound:g}x floor"
        return f"{COMPETITOR_LABEL[self.against]} >= {self.bound:g}x"


TARGETS: List[Target] = (
    [Target("small", "plain", "train", "torch", 2.5),
     Target("small", "plain", "inference", "torch", 2.0),
     Target("small", "plain", "inference", "ort", 1.4),
     Target("medium", "plain", "inference", "torch", 1.0),
     Target("medium", "plain", "inference", "ort", 1.0),
     Target("medium", "plain", "inference", "floor", 1.1),
     Target("medium", "plain", "train", "torch", 1.15),
     Target("medium", "plain", "train", "floor", 1.2)]
    + [Target("large", "plain", m, "torch", 1.0) for m in MODES]
    + [Target("large", "plain", m, "floor", 1.15) for m in MODES]
    + [Target("medium", "float64", m, "torch", 1.4) for m in MODES]
    + [Target("medium", "projection", "train", "torch", 1.4),
       Target("medium", "projection", "inference", "torch", 2.0)]
    + [Target(f"sweep B={b}", "plain", m, "torch", 1.0) for b in (1, 4, 16, 64) for m in MODES]
    + [Target("small", "2x bidir", "train", "torch", 3.0)]
    # the GRU's (against torch.nn.GRU and ORT's GRU)
    + [Target("small", "plain", "inference", "torch", 1.3, "gru"),
       Target("small", "plain", "inference", "ort", 1.0, "gru"),
       Target("small", "plain", "train", "torch", 1.5, "gru"),
       Target("medium", "plain", "inference", "torch", 1.0, "gru"),
       Target("medium", "plain", "inference", "ort", 1.0, "gru"),
       Target("medium", "plain", "train", "torch", 1.1, "gru")]
    + [Target("large", "plain", m, "torch", 1.0, "gru") for m in MODES]
    + [Target("medium", "float64", m, "torch", 1.3, "gru") for m in MODES])


def targets_of(case: Case, mode: str) -> List[Target]:
    return [t for t in TARGETS
            if (t.size, t.variant, t.mode, t.cell) == (case.size, case.variant, mode, case.cell)]

