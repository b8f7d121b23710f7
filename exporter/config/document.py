"""YAML text -> a plain Python document, refusing what a configuration never needs and an attacker
would use: more text than a config can be, aliases (the "billion laughs" bomb) and duplicate keys
(the later one silently wins in PyYAML).

Aliases are refused altogether rather than bounded: ``defaults:`` already shares settings between
brokers, an alias is the only way a few bytes of YAML become gigabytes once walked, and without them
the work of loading is bounded by the size of the text (libyaml also bounds nesting at 1,000 levels).
"""

from __future__ import annotations

import yaml

from mqtt_cert_exporter.config.model import ConfigError

#: About 25,000 brokers; loading this much takes seconds on a small machine (a 50 MB file took 101 s).
MAX_CONFIG_BYTES = 4 << 20

# libyaml's loader is about 6x faster than the pure-Python one (field notes: 0.06 s vs 0.34 s for
# 1,100 brokers); the pure-Python one serves where PyYAML was built without it.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def too_big(size: int) -> str | None:
    if size > MAX_CONFIG_BYTES:
        return f"larger than {MAX_CONFIG_BYTES // (1 << 20)} MiB; a configuration is far smaller"
    return None


def load_document(text: str) -> object:
    """The YAML document in ``text``; ConfigError lists what is refused, each with its place."""
    problem = too_big(len(text.encode("utf-8", "surrogatepass")))
    if problem:
        raise ConfigError([f"config: {problem}"])
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _refused(node)
        if problems:
            raise ConfigError(problems)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        # `from None`: PyYAML's own message quotes the offending line, which may hold a password.
        raise ConfigError([describe_yaml_error(exc)]) from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise ConfigError(["config: nested too deeply"]) from None
    finally:
        loader.dispose()


def _refused(root: yaml.Node) -> list[str]:
    """Aliases (once per anchored node) and duplicate keys, in document order; walked without
    recursion, each node once."""
    found: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    aliased: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            if id(node) not in aliased:
                aliased.add(id(node))
                mark = node.start_mark
                found.append(
                    (mark.line, mark.column, f"line {mark.line + 1}, column {mark.column + 1}: " + _ALIAS)
                )
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.MappingNode):
            first_line: dict[tuple[str, object], int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                key_path = f"{path}.{name}" if path else str(name)
                if isinstance(key, yaml.ScalarNode):
                    identity = (key.tag, key.value)
                    mark = key.start_mark
                    if identity in first_line:
                        message = f"duplicate key at line {mark.line + 1} (already set at line {first_line[identity]})"
                        found.append((mark.line, mark.column, f"{key_path}: {message}"))
                        continue
                    first_line[identity] = mark.line + 1
                children += [(key, key_path), (value, key_path)]
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        stack.extend(reversed(children))
    return [message for _, _, message in sorted(found)]


_ALIAS = (
    "the node anchored here is used again through an alias; "
    "YAML aliases are not allowed (put shared settings in defaults)"
)


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    # Built from the parts that carry no document content (no snippet of the line).
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position}: {exc.reason}"
    return f"invalid YAML ({type(exc).__name__})"
