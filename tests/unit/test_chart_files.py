"""Files of the chart and the images that must keep agreeing with their sources (no helm needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "taskfleet"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"


def test_the_chart_crd_is_an_exact_copy_of_deploy_crds() -> None:
    source = (REPO / "deploy" / "crds" / "taskqueue.yaml").read_bytes()

    assert (CHART / "crds" / "taskqueue.yaml").read_bytes() == source, (
        "charts/taskfleet/crds/taskqueue.yaml drifted from deploy/crds/taskqueue.yaml: run `make manifests`")


def test_values_yaml_starts_with_its_schema_and_documents_every_setting_one_way() -> None:
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# yaml-language-server: $schema=values.schema.json"

    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the keys enclosing the current line
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z]\w*):(.*)$", line)
        if not key:
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(documented for _, documented in stack)
        documented = inherited or _has_doc_comment(lines, number)
        # a setting is a key with a value on its line; sections (operator:, devBrokers:) group documented settings
        if key.group(3).strip() and not documented:
            undocumented.append(key.group(2))
        stack.append((indent, documented))
    assert not undocumented, f"values.yaml settings without a `# --` comment: {undocumented}"


def _has_doc_comment(lines: list[str], number: int) -> bool:
    """The comment block right above line ``number`` starts with `# --` (helm-docs style)."""
    above = number - 1
    while above >= 0 and lines[above].strip().startswith("#"):
        if lines[above].strip().startswith("# --"):
            return True
        above -= 1
    return False


def test_values_schema_rejects_unknown_keys_at_every_level_of_the_chart_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))

    def walk(node: dict[str, object], value: object, path: str) -> None:
        if node.get("type") != "object" or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{path or '/'} accepts unknown keys"
        assert isinstance(value, dict)
        props = node["properties"]
        assert isinstance(props, dict)
        assert set(value) <= set(props), f"{path}: values.yaml keys missing from the schema"
        for key, child in props.items():
            if key in value:
                walk(child, value[key], f"{path}/{key}")

    walk(schema, defaults, "")


def test_the_image_is_multi_stage_non_root_and_runs_taskfleet_as_pid_1() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    final_stage = text.split("\nFROM ")[-1]

    assert text.count("\nFROM ") == 2
    assert " AS build" in text
    assert re.search(r"^USER 10001:10001$", final_stage, re.M), "numeric non-root user (runAsNonRoot checks it)"
    assert re.search(r'^ENTRYPOINT \["taskfleet"\]$', final_stage, re.M), "exec form: signals reach taskfleet"
    for build_tool in ("pip install", "apt-get"):
        assert build_tool not in final_stage, "no build tools in the final stage"
