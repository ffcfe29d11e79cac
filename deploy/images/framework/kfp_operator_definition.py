"""The part of a framework compiler that is the same for every framework: the command line
(`--output_file F --pipeline_config C`), the Pipeline definition it reads
(`{name, version, image, env, framework: {name, parameters}}`, JSON or YAML, also inside
`{pipelineDefinition: …}` as the provider API carries it), the Pipeline's
environment, and the `module.function` a framework parameter names.

A definition the compiler cannot use ends the compile with a DefinitionError: its message is
the last line the compile prints, so it reaches the compile pod's termination message.
"""

import argparse
import importlib
import json
import os
import sys


class DefinitionError(Exception):
    """The Pipeline definition cannot be compiled as it is."""


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="compile.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--output_file", required=True, help="where the compiled pipeline is written")
    parser.add_argument("--pipeline_config", required=True, help="the Pipeline definition (JSON or YAML)")
    return parser.parse_args(argv)


def read_definition(path):
    with open(path, encoding="utf-8") as source:
        text = source.read()
    try:
        definition = json.loads(text)
    except ValueError:
        try:
            import yaml
        except ImportError as error:
            raise DefinitionError(f"{path} is not JSON, and PyYAML is not installed to read it as YAML") from error
        definition = yaml.safe_load(text)
    if isinstance(definition, dict) and "name" not in definition and isinstance(definition.get("pipelineDefinition"), dict):
        definition = definition["pipelineDefinition"]
    if not isinstance(definition, dict):
        raise DefinitionError(f"{path} does not hold a Pipeline definition (an object)")
    for field in ("name", "image"):
        if not isinstance(definition.get(field), str) or not definition[field]:
            raise DefinitionError(f"the Pipeline definition has no {field}")
    return definition


def parameters(definition):
    framework = definition.get("framework") or {}
    found = framework.get("parameters") or {}
    if not isinstance(found, dict):
        raise DefinitionError("framework.parameters of the Pipeline definition is not an object")
    return found


def sanitised_name(definition):
    """The pipeline's name on the platform: `namespace/name` becomes `namespace-name`."""
    return definition["name"].replace("/", "-")


def apply_environment(definition):
    """Sets the Pipeline's env (a list of {name, value}) for the compile and the code it imports."""
    for entry in definition.get("env") or []:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise DefinitionError(f"an env entry of the Pipeline definition has no name: {entry!r}")
        os.environ[entry["name"]] = str(entry.get("value", ""))


def load_function(parameter, reference):
    """The function `reference` (`module.function`, the framework parameter `parameter`) names."""
    if not isinstance(reference, str) or "." not in reference.strip("."):
        raise DefinitionError(
            f"the framework parameter {parameter} is {reference!r}; expected module.function, importable in the Pipeline's image"
        )
    module_name, function_name = reference.rsplit(".", 1)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, function_name)
    except AttributeError as error:
        raise DefinitionError(f"the module {module_name} has no {function_name} (framework parameter {parameter})") from error


def run(compile_definition, argv=None):
    """Parses the command line, reads the definition and compiles it; the exit status of the compile."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        definition = read_definition(arguments.pipeline_config)
        print(f"compiling {definition['name']} (version {definition.get('version', '-')}) into {arguments.output_file}", flush=True)
        compile_definition(definition, arguments.output_file)
    except DefinitionError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    print(f"{arguments.output_file} written", flush=True)
    return 0
