"""src/tools/op_platforms.yaml against the installed MindSpore's documentation (no graph compile).

Every entry with ``platforms`` cites one public API (``doc``). That API must exist in the
installed package, and its docstring's "Supported Platforms:" section (the source of the API
page) must list exactly the entry's devices. A docstring without the section is followed through
its "refer to" / "Alias for" link (Tensor methods point to their ops function). A docstring
with several overloads is read at the overload named by ``overload``. ``backward_of`` entries
must point at a forward entry with platforms, and no primitive is both structural and listed."""
import importlib
import re

import pytest
import yaml

from src.tools.portability import DEVICES, TABLE_PATH, load_table

LINK = re.compile(r"(?:refer to|Alias for)\s+:(?:func|class|meth):`~?([\w.]+)(?:\(\))?`", re.IGNORECASE)
OVERLOAD_START = re.compile(r"^\s*\.\. (?:method|function)::", re.MULTILINE)


def raw_entries():
    with open(TABLE_PATH) as f:
        return yaml.safe_load(f)


def resolve(dotted):
    """The object named ``dotted`` (``mindspore.ops.abs``, ``mindspore.Tensor.sum``,
    ``mindspore.scipy.optimize.linear_sum_assignment``): attributes first, submodules when absent,
    so that a function is not shadowed by the module of the same name."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            obj = importlib.import_module(".".join(parts[:i + 1]))
    return obj


def platform_sections(text):
    """Devices of each "Supported Platforms:" section (the heading alone on its line) in ``text``."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Supported Platforms:":
            following = next((after for after in lines[i + 1:] if after.strip()), "")
            found.append(tuple(re.findall(r"``(\w+)``", following)))
    return found


def documented_platforms(dotted, overload=None, depth=0):
    """``(devices, where)``: the Supported Platforms of API ``dotted`` (of its ``overload``),
    following links from docstrings that have no section; devices is None when none is found."""
    doc = resolve(dotted).__doc__ or ""
    if overload is not None:
        chunks = [c for c in OVERLOAD_START.split(doc) if overload in c]
        assert len(chunks) == 1, f"{dotted}: overload {overload!r} found {len(chunks)} times"
        doc = chunks[0]
    sections = set(platform_sections(doc))
    if len(sections) > 1:
        raise AssertionError(f"{dotted}: overloads document different platforms {sorted(sections)}; "
                             f"name one with overload:")
    if sections:
        return set(sections.pop()), dotted
    link = LINK.search(doc)
    if link and depth < 3 and link.group(1) != dotted:
        return documented_platforms(link.group(1), None, depth + 1)
    return None, dotted


def test_table_loads():
    structural, platforms = load_table()
    assert structural and platforms
    assert all(devices <= set(DEVICES) and devices for devices in platforms.values())


ENTRIES = raw_entries()["primitives"]
DOCUMENTED = sorted(name for name, entry in ENTRIES.items() if "platforms" in entry)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_platforms_are_the_cited_documentation(name):
    entry = ENTRIES[name]
    assert set(entry) <= {"platforms", "doc", "overload"}, entry
    assert str(entry["doc"]).startswith("mindspore."), entry
    devices, where = documented_platforms(entry["doc"], entry.get("overload"))
    assert devices is not None, f"{name}: {entry['doc']} documents no Supported Platforms"
    assert set(entry["platforms"]) == devices, \
        f"{name}: table {entry['platforms']}, {where} documents {sorted(devices)}"
    assert len(entry["platforms"]) == len(set(entry["platforms"])), entry


def test_backward_entries_inherit_a_documented_forward():
    for name, entry in ENTRIES.items():
        if "backward_of" in entry:
            assert set(entry) == {"backward_of"}, (name, entry)
            forward = ENTRIES.get(entry["backward_of"])
            assert forward is not None and "platforms" in forward, (name, entry)
        else:
            assert "platforms" in entry and "doc" in entry, (name, entry)


def test_structural_and_listed_are_disjoint():
    raw = raw_entries()
    structural = raw["structural"] + raw["compiler_inserted"]
    assert len(structural) == len(set(structural))
    assert not set(structural) & set(raw["primitives"])
    assert "Custom" not in raw["primitives"] and "Custom" not in structural  # judged by portability.py itself
