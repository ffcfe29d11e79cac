import sys

from kfp_operator_tfx_compiler import compile_definition
from kfp_operator_definition import run

sys.exit(run(compile_definition))
