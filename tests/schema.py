"""A validator for the subset of JSON Schema that cameron/openapi.py uses, to hold live API
answers against the served OpenAPI document."""

import re

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def errors(value, schema: dict, root: dict, where: str = "$") -> list[str]:
    """What is wrong with `value` against `schema` (empty when it conforms)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return errors(value, root["components"]["schemas"][name], root, where)
    found = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: {value!r} is not {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{where}: above {schema['maximum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{where}: '{name}' is missing")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                found += errors(value[name], sub, root, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += errors(item, schema["items"], root, f"{where}[{i}]")
    return found


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def check(doc: dict, method: str, template: str, resp) -> None:
    """Assert that `resp` (requests.Response) is an answer the document declares for
    `method template`: its status is listed and its JSON body fits that status's schema."""
    operation = doc["paths"][template][method.lower()]
    declared = operation["responses"]
    assert str(resp.status_code) in declared, (
        f"{method} {template} answered {resp.status_code}, not in {sorted(declared)}")
    content = declared[str(resp.status_code)].get("content", {})
    if "application/json" in content:
        assert resp.headers["Content-Type"].startswith("application/json"), resp.headers["Content-Type"]
        problems = errors(resp.json(), content["application/json"]["schema"], doc)
        assert not problems, f"{method} {template} {resp.status_code}: {problems}"
    for header in declared[str(resp.status_code)].get("headers", {}):
        assert header in resp.headers, f"{method} {template} {resp.status_code}: no {header} header"
