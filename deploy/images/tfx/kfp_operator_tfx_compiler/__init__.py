"""Compiles TFX components into a Kubeflow Pipelines v2 PipelineSpec with TFX's
KubeflowV2DagRunner.

Framework parameters: `components` names a function (`module.function`, importable in the
Pipeline's image) returning the pipeline's TFX components; `beamArgs`, a list of {name, value},
become the Beam pipeline's `--name=value` arguments; `usePipelineSpec2_1` (default true) is
passed to TFX versions that know it. Caching is off and the pipeline has no metadata connection,
as on Kubeflow Pipelines.
"""

import inspect

from kfp_operator_definition import DefinitionError, apply_environment, load_function, parameters, sanitised_name


def beam_arguments(name_values):
    if not isinstance(name_values, list):
        raise DefinitionError("the framework parameter beamArgs is not a list of {name, value}")
    arguments = []
    for entry in name_values:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise DefinitionError(f"an entry of the framework parameter beamArgs has no name: {entry!r}")
        arguments.append(f"--{entry['name']}={entry.get('value', '')}")
    return arguments


def compile_definition(definition, output_file):
    framework_parameters = parameters(definition)
    beam_args = beam_arguments(framework_parameters.get("beamArgs") or [])
    use_pipeline_spec_2_1 = framework_parameters.get("usePipelineSpec2_1", True)
    apply_environment(definition)
    create_components = load_function("components", framework_parameters.get("components"))

    from tfx.orchestration import pipeline
    from tfx.v1.orchestration import experimental as kubeflow

    config = {"display_name": definition["name"], "default_image": definition["image"]}
    if "use_pipeline_spec_2_1" in inspect.signature(kubeflow.KubeflowV2DagRunnerConfig.__init__).parameters:
        config["use_pipeline_spec_2_1"] = use_pipeline_spec_2_1
    runner = kubeflow.KubeflowV2DagRunner(
        config=kubeflow.KubeflowV2DagRunnerConfig(**config), output_filename=output_file
    )
    runner.run(
        pipeline.Pipeline(
            pipeline_name=sanitised_name(definition),
            components=create_components(),
            enable_cache=False,
            metadata_connection_config=None,
            beam_pipeline_args=beam_args,
        )
    )
