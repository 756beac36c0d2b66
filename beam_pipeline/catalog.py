"""The dataset versions under an output directory, and how their configs differ."""

from __future__ import annotations

import posixpath

from shared import storage
from shared.manifest import MANIFEST_NAME, read_manifest, read_run
from shared.storage import join


def find_versions(output_dir: str) -> list[tuple[str, dict]]:
    """(version directory, manifest) for every complete version, by name then id."""
    pattern = join(output_dir, "*", "*", MANIFEST_NAME)
    found = []
    for entry in storage.match(pattern):
        directory = posixpath.dirname(entry.path)
        found.append((directory, read_manifest(directory)))
    return sorted(found, key=lambda item: (item[1]["name"], item[1]["version_id"]))


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(manifests: list[dict]) -> dict[str, list]:
    """Config fields whose value is not the same in every manifest: field -> values."""
    flat = [flatten(m["config"]) for m in manifests]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def format_versions(output_dir: str) -> str:
    versions = find_versions(output_dir)
    if not versions:
        return f"No complete dataset versions under {output_dir}."
    lines = [f"{'name':<16} {'version':<17} {'train':>6} {'val':>5} {'failed':>6}  inputs  source"]
    for directory, m in versions:
        failed = len({f["patient"] for f in m["failed"]})
        source = read_run(directory).get("source", "?")
        lines.append(f"{m['name']:<16} {m['version_id']:<17} {len(m['splits']['train']['patients']):>6} "
                     f"{len(m['splits']['val']['patients']):>5} {failed:>6}  {len(m['inputs']):>6}  {source}")
    by_name: dict[str, list[dict]] = {}
    for _, m in versions:
        by_name.setdefault(m["name"], []).append(m)
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        diff = config_differences(group)
        ids = ", ".join(m["version_id"] for m in group)
        lines.append(f"\n{name}: config fields that differ between versions {ids}:")
        if not diff:
            lines.append("  none (the versions differ in their inputs or code version)")
        for field, values in diff.items():
            lines.append(f"  {field}: " + " | ".join(repr(v) for v in values))
    return "\n".join(lines)
