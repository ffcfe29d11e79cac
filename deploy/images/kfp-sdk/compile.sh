#!/bin/sh
# Compiles a KFP SDK pipeline: compile.sh --output_file F --pipeline_config C, with the Pipeline
# image's python3 (which brings the KFP SDK and the pipeline's code). Execution caching is off
# unless the Pipeline's env turns it on.
set -eu
here="$(dirname "$0")"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here"
export KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT="${KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT:-true}"
exec python3 -m kfp_operator_compiler "$@"
