"""The parity report: one ``Row`` per comparison, the row builders with their error measure, the
tolerances, and the accounting that makes every fixture array compared, an input, or named as
not compared."""
import re
from dataclasses import dataclass

import numpy as np

TOL_ENCODER = 1e-4     # backbone .. encoder head, foreground scores, proposals
TOL_DECODER = 3e-3     # decoder states and logits (teacher-forced proposals)
TOL_BOX = 3e-4         # normalized boxes and references
TOL_LOSS_REL = 1e-4   # every loss, relative
TOL_MSDA_OUT = 1e-5
TOL_MSDA_GRAD = 1e-4
TOL_MSDA_LOC_GRAD = 1e-3


@dataclass
class Row:
    fixture: str
    name: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    agreement: str = ""
    tol: float = float("nan")
    ok: bool = True
    note: str = ""
    detail: bool = False  # one of many per-tensor rows: printed when failing or with --verbose
    info: bool = False    # a note (inputs consumed, pairing, counts), not a comparison

    def line(self):
        status = "ok  " if self.ok else "FAIL"
        num = (f"abs {self.max_abs:9.2e}  rel {self.max_rel:9.2e}  tol {self.tol:7.1e}"
               if np.isfinite(self.max_abs) else " " * 46)
        return f"{status} {self.fixture:22s} {self.name:36s} {num}  {self.agreement:14s} {self.note}"


def _errors(ours, ref):
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shape {ours.shape} != reference {ref.shape}")
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(ours)) or not np.array_equal(ref[~finite], ours[~finite]):
        return float("inf"), float("inf")
    if not finite.any():
        return 0.0, 0.0
    diff = np.abs(ours[finite] - ref[finite]).max()
    return float(diff), float(diff / max(np.abs(ref[finite]).max(), 1e-12))


def value_row(fixture, name, ours, ref, tol, agreement=""):
    try:
        max_abs, max_rel = _errors(ours, ref)
    except ValueError as e:
        return Row(fixture, name, ok=False, note=str(e))
    return Row(fixture, name, max_abs, max_rel, agreement, tol, bool(max_abs <= tol))


def exact_row(fixture, name, ours, ref):
    ours, ref = np.asarray(ours), np.asarray(ref)
    same = ours.shape == ref.shape and np.array_equal(ours, ref)
    return Row(fixture, name, agreement="exact" if same else "differs", ok=bool(same),
               note="" if same else f"ours {ours.ravel()[:6]} ref {ref.ravel()[:6]}")


def set_row(fixture, name, ours, ref):
    """Per-image set equality of index arrays (B,k)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return Row(fixture, name, ok=False, note=f"shape {ours.shape} != reference {ref.shape}")
    agree = [len(set(o.tolist()) & set(r.tolist())) for o, r in zip(ours, ref)]
    total = ref.shape[1]
    ok = all(a == total for a in agree)
    return Row(fixture, name, agreement="sets " + " ".join(f"{a}/{total}" for a in agree), ok=ok)


def loss_row(fixture, name, ours, ref):
    err = abs(ours - ref)
    rel = err / max(abs(ref), 1e-12)
    return Row(fixture, name, err, rel, f"{ours:.6g}", TOL_LOSS_REL, bool(rel <= TOL_LOSS_REL or err <= 1e-8))


class MissingOutput(KeyError):
    """A fixture array whose port counterpart the port did not produce."""


class PortOutputs(dict):
    """The port's outputs by fixture name; a missing one raises ``MissingOutput``."""

    def __missing__(self, key):
        raise MissingOutput(key)


class Rows(list):
    """Rows of one fixture; ``add(make, name)`` turns a missing port output into a FAIL row."""

    def __init__(self, fixture):
        super().__init__()
        self.fixture = fixture

    def add(self, make, name=None):
        try:
            row = make()
        except MissingOutput as e:
            row = Row(self.fixture, name or str(e.args[0]), ok=False, note=f"port output {e.args[0]!r} missing")
        if isinstance(row, list):
            self.extend(row)
        else:
            self.append(row)
        return self[-1]


# arrays a fixture kind feeds to the port (inputs, draws, channel/class subsets), not outputs
INPUT_ARRAYS = re.compile(r"image_\d+|image_sizes|orig_sizes|padded_size|.*_channels|.*_subset|"
                          r"rand_label_p|rand_new_label|rand_box_sign01|rand_box_part|target_boxes_\d+|"
                          r"target_labels_\d+|value|sampling_locations|attention_weights|grad_output|spatial_shapes")


def not_compared(label, what, note):
    return Row(label, what, ok=True, agreement="not compared", note=note)


def account_arrays(label, g, meta, rows):
    """Rows closing a fixture's comparison: the inputs it consumed (one line), every array no
    comparison read (a 'not compared' row naming them) and arrays the JSON lists that the npz
    lacks (a failure)."""
    out = []
    names = {r.name for r in rows}
    inputs = sorted(k for k in g.used if INPUT_ARRAYS.fullmatch(k) and k not in names)
    if inputs:
        out.append(Row(label, "inputs", agreement=f"{len(inputs)} arrays", ok=True, info=True,
                       note="fed to the port: " + ", ".join(inputs)))
    left = g.unused()
    if left:
        out.append(not_compared(label, f"{len(left)} array(s)", "no comparison reads: " + ", ".join(left)))
    listed = [k for k in meta.get("arrays", {}) if k not in g]
    if listed:
        out.append(Row(label, "arrays listed in the JSON", ok=False, note="missing from the npz: " + ", ".join(listed)))
    return out


def summary_line(rows):
    failed = sum(not r.ok for r in rows)
    skipped = [r for r in rows if r.agreement == "not compared"]
    fixtures = sum(1 for r in skipped if r.name == "-" or r.name == "converter round-trip")
    arrays = sum(int(r.name.split()[0]) for r in skipped if r.name.endswith("array(s)"))
    info = sum(1 for r in rows if r.info)
    return (f"parity: {len(rows) - len(skipped) - info} comparisons, {failed} failed, "
            f"{fixtures} fixture(s) and {arrays} array(s) not compared"), failed, len(skipped)
