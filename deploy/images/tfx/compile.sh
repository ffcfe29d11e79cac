#!/bin/sh
# Compiles a TFX pipeline for Kubeflow Pipelines v2: compile.sh --output_file F --pipeline_config
# C, with the Pipeline image's python3 (which brings TFX and the pipeline's code).
set -eu
here="$(dirname "$0")"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here"
exec python3 -m kfp_operator_tfx_compiler "$@"
