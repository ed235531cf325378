"""The gradient fixtures' comparison (``model_grad_*``): the port's gradients of the training
fixture's total loss under the official keys, against the fixture's norms, random projections,
full gradients and global norm, at the fixture JSON's per-group tolerances."""
import zlib

import numpy as np

from src.tools.parity.report import TOL_LOSS_REL, Row, loss_row, value_row

GRAD_STATS = ("grad_norm", "grad_proj1", "grad_proj2", "grad_full")
REPORT_SECTIONS = ("backbone", "neck", "encoder", "decoder", "heads")


def tolerance_group(key):
    """The golden README's gradient tolerance group of an official key (used only for a key the
    fixture JSON gives no ``group``)."""
    if key == "transformer.alpha":
        return "alpha"
    if ".sampling_offsets." in key:
        return "sampling_offsets"
    if key.startswith(("backbone.", "neck.")):
        return key.split(".")[0]
    return "transformer"


def report_section(key):
    """Where an official key sits in the model, for the per-group summary rows."""
    if key.startswith(("backbone.", "neck.")):
        return key.split(".")[0]
    if key.startswith(("class_embed.", "bbox_embed.")):
        return "heads"
    if key.startswith(("transformer.decoder.", "transformer.tgt_embed.", "label_enc.")):
        return "decoder"
    return "encoder"


def grad_pairing_rows(label, meta, train, train_meta):
    """An info row naming the training fixture, and a failure per identity field (weights,
    images, model) where the two JSONs disagree: then it is not the same forward."""
    rows = [Row(label, "training fixture", agreement=train, ok=True, info=True,
                note=f"inputs, draws and teacher-forced top-k of {train}")]
    for field in ("weight_seed", "image_seed", "model", "image_sizes"):
        if field in meta and meta[field] != train_meta.get(field):
            rows.append(Row(label, f"{field} of {train}", ok=False,
                            note=f"{meta[field]!r} != {train_meta.get(field)!r}: not the same forward"))
    return rows


def official_grads(entries, port_grads, port_shapes):
    """Port gradients under the official canonical keys of a key list's ``entries``.

    The converter's name map, inverted: every official key (aliases included) is mapped with
    ``port_name``; the port parameters an alias group reaches are summed (one shared Parameter
    counts once, separate copies add up, as the official gradient of a tied tensor is the sum
    over its uses). Returns ({key: gradient or None}, {key: port names}, port trainable names
    reached by no official key)."""
    from src.checkpoint import port_name

    reach = {}
    for e in entries:
        name = port_name(e["name"], port_shapes)
        if name is not None:
            reach.setdefault(e.get("alias_of", e["name"]), set()).add(name)
    out = {}
    for key, names in reach.items():
        trained = sorted(n for n in names if n in port_grads)
        out[key] = (None if not trained else
                    np.sum([port_grads[n].astype(np.float32) for n in trained], 0, dtype=np.float32))
    covered = set().union(*reach.values()) if reach else set()
    return out, reach, sorted(n for n in port_grads if n not in covered)


def projection(key, grad, k):
    rng = np.random.default_rng([k, zlib.crc32(key.encode("utf-8"))])
    return float(np.sum(grad.astype(np.float64) * rng.standard_normal(grad.shape)))


def compare_grad(name, g, meta, ours, entries, train_meta=None):
    """The gradient fixture's arrays against the port's gradients, every key driven by the
    fixture: per official key norm and both projections (one row each, 'detail' rows), the
    full gradients, the global norm, the sets of parameters without gradient and the per-group
    maxima (summary rows); plus the losses of the differentiated forward."""
    from src.losses.criterion import loss_keys

    rows = []
    tols = meta.get("tolerances")
    if not tols:
        return [Row(name, "tolerances", ok=False, note="fixture JSON has no 'tolerances'")]
    params = {p["name"]: p for p in meta.get("params", [])}
    by_key = {}
    for array in g:  # the fixture's keys drive the comparison; arrays no row reads are reported
        stat, sep, key = array.partition("|")
        if sep and stat in GRAD_STATS:
            by_key.setdefault(key, {})[stat] = g[array]
    grads, reach, extra = official_grads(entries, ours["grads"], ours["shapes"])

    # the differentiated forward is the training fixture's
    ref_losses = meta.get("losses_weighted") or (train_meta or {}).get("losses_weighted")
    if ref_losses:
        port_losses = dict(zip(loss_keys(), ours["losses"]))
        errs = [abs(port_losses[k] - v) / max(abs(v), 1e-12) for k, v in ref_losses.items() if k in port_losses]
        missing = [k for k in ref_losses if k not in port_losses]
        worst = max(errs, default=float("inf"))
        rows.append(Row(name, f"losses_weighted ({len(ref_losses)})", max_rel=worst, tol=TOL_LOSS_REL,
                        ok=not missing and worst <= TOL_LOSS_REL, agreement=f"{len(errs)}/{len(ref_losses)}",
                        note=f"no port loss for {missing}" if missing else ""))
    if "total_loss" in meta or "total_loss" in (train_meta or {}):
        rows.append(loss_row(name, "total_loss", ours["total_loss"], meta.get("total_loss", train_meta["total_loss"])))
    ref_none = set(meta.get("none_grad_params", [])) | set(meta.get("zero_grad_params", []))
    frozen = set(meta.get("frozen_params", []))

    def without_grad(key):
        return grads.get(key) is None or not np.any(grads[key])

    detail = []
    summary = {}  # (section, stat) -> rows; also (section: tolerance group, stat) for the loose groups

    def summarize(section, group, stat, row):  # a section's rows, and per tolerance group inside it
        summary.setdefault((section, stat), []).append(row)
        summary.setdefault((f"{section}: {group}", stat), []).append(row)
    for key in sorted(by_key):
        stats = by_key[key]
        group = params.get(key, {}).get("group") or tolerance_group(key)
        tol = tols.get(group)
        grad = grads.get(key)
        section = report_section(key)
        if tol is None:
            detail.append(Row(name, f"grad|{key}", ok=False, note=f"no tolerances for group {group!r}"))
            continue
        if grad is None:
            why = (f"port parameter(s) {sorted(reach[key])} not trainable" if key in reach
                   else "no port parameter")
            detail.append(Row(name, f"grad|{key}", ok=key in ref_none,
                              note=f"no port gradient ({why})" + ("; none in the official model either"
                                                                  if key in ref_none else "")))
            continue
        shape = tuple(params.get(key, {}).get("shape", grad.shape))
        if tuple(grad.shape) != shape:
            detail.append(Row(name, f"grad|{key}", ok=False, note=f"shape {grad.shape} != reference {shape}"))
            continue
        norm = float(np.linalg.norm(grad.astype(np.float64)))
        ref_norm = float(stats["grad_norm"]) if "grad_norm" in stats else float(params[key]["norm"])
        scale = max(ref_norm, 1e-30)
        if "grad_norm" in stats:
            err = abs(norm - ref_norm)
            row = Row(name, f"grad_norm|{key}", err, err / scale, f"{norm:.6g}", tol["norm_rtol"],
                      bool(err <= tol["norm_rtol"] * ref_norm), note=group)
            detail.append(row)
            summarize(section, group, "norm", row)
        projs = [(k, stats[f"grad_proj{k}"]) for k in (1, 2) if f"grad_proj{k}" in stats]
        if projs:
            err = max(abs(projection(key, grad, k) - float(ref)) for k, ref in projs)
            row = Row(name, f"grad_proj|{key}", err, err / scale, f"{len(projs)} proj", tol["proj_atol_times_norm"],
                      bool(err <= tol["proj_atol_times_norm"] * ref_norm), note=group)
            detail.append(row)
            summarize(section, group, "proj", row)
        if "grad_full" in stats:
            row = value_row(name, f"grad_full|{key}", grad, stats["grad_full"], np.nan)
            if np.isfinite(row.max_abs):
                row.tol = tol["full_grad_atol_times_maxabs"]
                row.ok = bool(row.max_rel <= row.tol)
            row.note = group
            rows.append(row)
            summarize(section, group, "full", row)
    # port gradients the official model does not have: keys without arrays (e.g. the frozen stem)
    # and port parameters no official key reaches
    for key in sorted(k for k, v in grads.items() if v is not None and k not in by_key):
        if key in ref_none and without_grad(key):
            continue
        rows.append(Row(name, f"grad|{key}", ok=False, note=f"port parameter(s) {sorted(reach[key])} trainable, but "
                        + ("frozen in the official model" if key in frozen else "the fixture has no gradient for it")))
    for port in extra:
        rows.append(Row(name, f"grad|{port}", ok=False,
                        note="trainable in the port, reached by no official key (no gradient in the official model)"))
    def order(item):
        (section, stat), _ = item
        return REPORT_SECTIONS.index(section.split(":")[0]), ":" in section, section, stat

    groups = {}
    for section, _ in summary:
        if ":" in section:
            groups.setdefault(section.split(":")[0], set()).add(section)
    for (section, stat), members in sorted(summary.items(), key=order):
        if ":" in section and len(groups[section.split(":")[0]]) == 1:
            continue  # a section of one tolerance group: its own row says it
        worst = max(members, key=lambda r: r.max_rel if np.isfinite(r.max_rel) else np.inf)
        ratio = max((r.max_rel / r.tol if np.isfinite(r.max_rel) else np.inf) for r in members)
        rows.append(Row(name, f"grad {stat} [{section}] max", worst.max_abs, worst.max_rel, f"{len(members)} tensors",
                        worst.tol, all(r.ok for r in members), note=f"worst {worst.name.split('|')[-1]}; "
                        f"max err/tol {ratio:.2g}"))
    for r in detail:
        r.detail = True
    rows.extend(detail)
    if "global_grad_norm" in g:  # what the port's clipping sees: every port gradient, tied copies summed
        squares = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in grads.values() if v is not None)
        squares += sum(float(np.sum(ours["grads"][p].astype(np.float64) ** 2)) for p in extra)
        ref = float(g["global_grad_norm"])
        ours_norm = float(np.sqrt(squares))
        rtol = tols.get("global_grad_norm_rtol", 1e-3)
        err = abs(ours_norm - ref)
        rows.append(Row(name, "global_grad_norm", err, err / ref, f"{ours_norm:.7g}", rtol, bool(err <= rtol * ref)))
    # the official parameters without (or with an all-zero) gradient must be the port's
    considered = set(by_key) | ref_none
    differ = sorted(k for k in considered if without_grad(k) != (k in ref_none))
    port_none = sum(without_grad(k) for k in considered)
    rows.append(Row(name, "none/zero-gradient parameters", agreement=f"{port_none} vs {len(ref_none)}",
                    ok=not differ, note=f"differ: {differ[:8]}" if differ else ""))
    rows.append(Row(name, "gradient keys compared", agreement=f"{len(by_key)} keys", ok=True, info=True,
                    note=f"{len(extra)} port-only trainable"))
    return rows
