"""Compiles a KFP SDK pipeline function into a Kubeflow Pipelines v2 PipelineSpec.

The framework parameter `pipeline` names the `@dsl.pipeline` function (`module.function`,
importable in the Pipeline's image). The output is what `kfp.compiler.Compiler` writes: JSON
when the output file ends in .json, YAML (the PipelineSpec, then any PlatformSpec) otherwise.
The Pipeline's image is in KFP_PIPELINE_IMAGE while its code is imported, so components can use
it as their base image.
"""

import os

from kfp_operator_definition import apply_environment, load_function, parameters, sanitised_name


def compile_definition(definition, output_file):
    os.environ["KFP_PIPELINE_IMAGE"] = definition["image"]
    apply_environment(definition)
    pipeline = load_function("pipeline", parameters(definition).get("pipeline"))

    from kfp import compiler

    compiler.Compiler().compile(pipeline, pipeline_name=sanitised_name(definition), package_path=output_file)
